-- wrk script: POST the signed delivery written by a bench server (BODY_FILE, SIG_FILE).
local function slurp(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end
wrk.method = "POST"
wrk.body = slurp(os.getenv("BODY_FILE"))
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-AIRMY-Signature"] = slurp(os.getenv("SIG_FILE")):gsub("%s+$", "")
