"""The server-side script that applies one batch of budget increments atomically.

KEYS[1] is the batch's idempotency key; KEYS[2..] the counters. ARGV[1] is the
idempotency TTL in seconds; ARGV[i] (i >= 2) describes the counter KEYS[i] as one string
`expire_at|nusd|tokens|spans|limit_nusd|limit_tokens|thresholds|tier` (limits -1 = none,
thresholds a comma list, the tier last so it may hold any character): one argument per
counter keeps the client's encoding cost low.

If the batch was already applied the script changes nothing and returns
{0, pending}: `pending` is the JSON of alerts that batch fired and the sink has not yet
confirmed emitting ("1" when none), so a retry after a lost reply still emits them.
Otherwise it increments every counter, refreshes its limit and expiry, marks each
threshold crossed for the first time in the period (HSETNX a:<threshold>), remembers the
batch, and returns {1, pending, totals}: totals "nusd tok" per counter, joined by ",".
"""

from __future__ import annotations

APPLY_BATCH_LUA = r"""
local prev = redis.call('GET', KEYS[1])
if prev then
  return {0, prev}
end
local fired = {}
local totals = {}
for i = 2, #KEYS do
  local k = KEYS[i]
  local exp, dn, dt, ds, slu, slt, thrs, tier =
    string.match(ARGV[i], '^(%d+)|(%d+)|(%d+)|(%d+)|(-?%d+)|(-?%d+)|([^|]*)|(.*)$')
  local nusd = redis.call('HINCRBY', k, 'nusd', dn)
  local tok = redis.call('HINCRBY', k, 'tok', dt)
  redis.call('HINCRBY', k, 'n', ds)
  local lu = tonumber(slu)
  local lt = tonumber(slt)
  redis.call('HSET', k, 'lu', slu, 'lt', slt, 'tier', tier)
  redis.call('EXPIREAT', k, exp)
  for t in string.gmatch(thrs, '[^,]+') do
    local thr = tonumber(t)
    if (lu >= 0 and nusd >= thr * lu) or (lt >= 0 and tok >= thr * lt) then
      if redis.call('HSETNX', k, 'a:' .. t, '1') == 1 then
        fired[#fired + 1] = {k, t, string.format('%d', nusd), string.format('%d', tok), slu, slt}
      end
    end
  end
  totals[#totals + 1] = string.format('%d %d', nusd, tok)
end
local pending = '1'
if #fired > 0 then
  pending = cjson.encode(fired)
end
redis.call('SET', KEYS[1], pending, 'EX', ARGV[1])
return {1, pending, table.concat(totals, ',')}
"""

# Marks the alerts of an applied batch as emitted (keeps the batch remembered).
ACK_ALERTS_LUA = r"""
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('SET', KEYS[1], '1', 'KEEPTTL')
end
return 1
"""
