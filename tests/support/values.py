"""The account, SIDs and credentials every test service uses, and the headers built from them."""

from __future__ import annotations

ACCOUNT_SID = "AC" + "a1" * 16
AUTH_TOKEN = "test-auth-token-0123456789"
WORKSPACE_SID = "WS" + "b2" * 16
WORKFLOW_SID = "WW" + "c3" * 16
BILLING_WORKFLOW_SID = "WW" + "d4" * 16
CONVERSATION_SID = "CH" + "e5" * 16
CHAT_SERVICE_SID = "IS" + "f6" * 16
TOOL_TOKEN = "test-tool-token-0123456789abcdef"
ADMIN_TOKEN = "test-admin-token-fedcba9876543210"


def tool_auth(token: str = TOOL_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def admin_auth(token: str = ADMIN_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def session_header(conversation_sid: str = CONVERSATION_SID) -> str:
    return f"webhook:conversations__{CHAT_SERVICE_SID}/{conversation_sid}"


def new_conversation_sid(n: int) -> str:
    return "CH" + f"{n:032x}"
