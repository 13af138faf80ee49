-- Release a delivery claim (worker/claim.py): compare-and-delete.
-- KEYS: 1 the claim. ARGV: 1 the value the run set.
-- Returns 1 when released, 0 when the claim had expired (and maybe been taken again).
return compare_and_delete(KEYS[1], ARGV[1])
