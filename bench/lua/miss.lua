-- wrk script for `router_miss`: a routing key never seen before on every
-- request. init() gets a per-run prefix so rounds never reuse keys.
local prefix = "miss"
local n = 0

function init(args)
  if args[1] ~= nil then
    prefix = args[1]
  end
end

function request()
  n = n + 1
  return wrk.format("GET", "/", {
    ["Host"] = "catalog.demo.svc.cluster.local",
    ["baggage"] = "sd-routing-key=" .. prefix .. "-" .. n,
  })
end
