-- ARGV: entry key prefix, id. The entry in full: type, body, received ms, attempts, state
-- letter, last error, finished ms, lease expiry ms, stream message id, scheduled (or paused)
-- score (each '' when absent), and the server's time; empty when there is no such entry.
local f = redis.call('HMGET', ARGV[1] .. ARGV[2], 't', 'b', 'r', 'a', 's', 'e', 'z', 'u', 'm')
if not f[1] then return {} end
local out = {}
for i = 1, 9 do out[i] = f[i] or '' end
out[10] = redis.call('ZSCORE', KEYS[2], ARGV[2]) or redis.call('ZSCORE', KEYS[6], ARGV[2]) or ''
out[11] = tostring(now)
return out
