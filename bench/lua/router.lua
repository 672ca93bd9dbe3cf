-- The `lua` bench scenario: what users write instead of sandbox-router, an
-- Envoy Lua filter doing the same job for one sandbox: parse W3C baggage,
-- find the routing key (value before any `;` property, percent-decoded),
-- look it up with the destination host in a static table, set the route
-- header and clear the route cache.
local routes = {
  ["pr-421|catalog.demo.svc.cluster.local"] = "pr-421",
}

local function unescape(s)
  return (string.gsub(s, "%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

local function routing_key(baggage)
  for member in string.gmatch(baggage, "[^,]+") do
    local name, value = string.match(member, "^%s*([^=%s]+)%s*=%s*([^;]*)")
    if name == "sd-routing-key" then
      return unescape((string.gsub(value, "%s+$", "")))
    end
  end
  return nil
end

function envoy_on_request(handle)
  local headers = handle:headers()
  headers:remove("x-sandbox-route")
  local baggage = headers:get("baggage")
  if baggage == nil then
    return
  end
  local key = routing_key(baggage)
  if key == nil then
    return
  end
  local host = string.match(headers:get(":authority") or "", "^[^:]+") or ""
  local sandbox = routes[key .. "|" .. host]
  if sandbox ~= nil then
    headers:replace("x-sandbox-route", sandbox)
    handle:clearRouteCache()
  end
end
