#!/usr/bin/env bash
# The end-to-end assertions, from pods of the kind cluster:
#   1. baseline vs sandbox routing from a client whose sidecar runs the plugin
#      (seeded sandbox pr-42 forks catalog only), invalid keys, spoofed headers;
#   2. a two-hop call: client -> catalog -> reviews, the app forwarding baggage;
#   3. the RouteService API: reads open to the mesh, writes only for the
#      tooling's identity with the token; a sandbox deleted and created at run
#      time, and the sidecars following it;
#   4. mode "authority" with no VirtualService at all;
#   5. the filter's counters in the sidecar's stats;
#   6. fail-open: with the RouteService scaled to zero, requests still succeed
#      (the baseline for every key it does not know).
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

passed=0

ok() {
  passed=$((passed + 1))
  printf '    ok   %s\n' "$*" >&2
}

# request URL [ROUTING_KEY [EXTRA_HEADER]]: one GET from the client pod,
# printed as "<status> <x-served-by> <x-via>" ("-" for a missing header).
request() {
  local url=$1 key=${2:-} extra=${3:-}
  local args=(-sS -m 10 -o /dev/null -D - -w 'status: %{http_code}\n')
  if [[ -n "$key" ]]; then
    args+=(-H "baggage: sd-routing-key=$key")
  fi
  if [[ -n "$extra" ]]; then
    args+=(-H "$extra")
  fi
  { kctx -n demo exec deploy/client -c client -- curl "${args[@]}" "$url" 2>/dev/null || true; } |
    tr -d '\r' |
    awk -F': ' '
      tolower($1) == "x-served-by" { served = $2 }
      tolower($1) == "x-via" { via = $2 }
      $1 == "status" { status = $2 }
      END { printf "%s %s %s\n", (status ? status : "000"), (served ? served : "-"), (via ? via : "-") }'
}

# expect DESCRIPTION WANT URL [KEY [EXTRA_HEADER]]: retries until the answer
# is WANT ("<status> <served-by> <via>") or CONVERGE_SECONDS pass.
expect() {
  local description=$1 want=$2
  shift 2
  local got=""
  local deadline=$((SECONDS + CONVERGE_SECONDS))
  while :; do
    got=$(request "$@" || true)
    if [[ "$got" == "$want" ]]; then
      ok "$description: $got"
      return 0
    fi
    if ((SECONDS >= deadline)); then
      fail "$description: expected '$want', got '$got' (GET $1${2:+ with routing key $2}${3:+ and $3})"
    fi
    sleep 2
  done
}

# api METHOD PATH [BODY]: a RouteService call from the tooling pod (as
# ServiceAccount sandbox-tooling, with the token); prints the status code.
api() {
  local method=$1 path=$2 body=${3:-}
  # The script runs in the pod's shell, with the pod's $ROUTESERVICE_TOKEN.
  # shellcheck disable=SC2016
  kctx -n sandbox-system exec deploy/tooling -c tooling -- sh -c '
    method=$1 path=$2 body=$3
    if [ -n "$body" ]; then set -- -H "content-type: application/json" --data "$body"; else set --; fi
    curl -sS -m 10 -o /dev/null -w "%{http_code}" -X "$method" \
      -H "authorization: Bearer $ROUTESERVICE_TOKEN" "$@" "http://routeservice.sandbox-system:8080$path"
  ' sh "$method" "$path" "$body"
}

expect_status() {
  local description=$1 want=$2 got=$3
  [[ "$got" == "$want" ]] || fail "$description: expected HTTP $want, got $got"
  ok "$description: HTTP $got"
}

catalog=http://catalog.demo.svc.cluster.local:8080
reviews=http://reviews.demo.svc.cluster.local:8080

log "1. baseline and sandbox routing (sandbox pr-42 forks catalog)"
# The first answer also waits for the plugin to be fetched and loaded.
CONVERGE_SECONDS=$((CONVERGE_SECONDS + 120)) \
  expect "routing key pr-42 -> catalog's fork" "200 catalog/pr-42 -" "$catalog/" pr-42
expect "no routing key -> baseline" "200 catalog/baseline -" "$catalog/"
expect "short host name, qualified in the caller's namespace" "200 catalog/pr-42 -" "http://catalog:8080/" pr-42
expect "pr-42 does not fork reviews -> baseline" "200 reviews/baseline -" "$reviews/" pr-42
expect "a key with no sandbox -> baseline" "200 catalog/baseline -" "$catalog/" pr-999
expect "an invalid key -> baseline" "200 catalog/baseline -" "$catalog/" "bad%20key%21"
expect "a client-sent route header is removed -> baseline" "200 catalog/baseline -" \
  "$catalog/" "" "x-sandbox-route: pr-42"
expect "Jaeger's uberctx- carrier" "200 catalog/pr-42 -" "$catalog/" "" "uberctx-sd-routing-key: pr-42"

log "2. two hops: client -> catalog -> reviews, baggage forwarded by the app"
expect "catalog's fork calls reviews' baseline (pr-42 forks catalog only)" \
  "200 reviews/baseline catalog/pr-42" "$catalog/call/reviews" pr-42
expect "no key: baseline calls baseline" "200 reviews/baseline catalog/baseline" "$catalog/call/reviews"

log "3. RouteService API: authorization, and sandboxes changed at run time"
status=$(kctx -n demo exec deploy/client -c client -- \
  curl -sS -m 10 -o /dev/null -w '%{http_code}' http://routeservice.sandbox-system:8080/v1/routes)
expect_status "reads are open to the mesh (GET /v1/routes from demo/client)" 200 "$status"
status=$(kctx -n demo exec deploy/client -c client -- \
  curl -sS -m 10 -o /dev/null -w '%{http_code}' -X DELETE http://routeservice.sandbox-system:8080/v1/sandboxes/pr-42)
expect_status "writes from another identity are denied by the AuthorizationPolicy" 403 "$status"
status=$(kctx -n sandbox-system exec deploy/tooling -c tooling -- \
  curl -sS -m 10 -o /dev/null -w '%{http_code}' -X DELETE http://routeservice.sandbox-system:8080/v1/sandboxes/pr-42)
expect_status "writes without the token are refused by the RouteService" 401 "$status"

status=$(api DELETE /v1/sandboxes/pr-42)
expect_status "DELETE /v1/sandboxes/pr-42 (tooling, with token)" 204 "$status"
expect "sandbox deleted -> pr-42 goes to baseline" "200 catalog/baseline -" "$catalog/" pr-42

status=$(api PUT /v1/sandboxes/pr-42 '{"routingKey": "pr-42", "routes": [
  {"baseline": "catalog.demo.svc.cluster.local", "target": "catalog-pr-42.demo.svc.cluster.local"},
  {"baseline": "reviews.demo.svc.cluster.local", "target": "reviews-pr-42.demo.svc.cluster.local"}]}')
[[ "$status" == 200 || "$status" == 201 ]] || fail "PUT /v1/sandboxes/pr-42: expected 200 or 201, got $status"
ok "PUT /v1/sandboxes/pr-42 forking catalog and reviews: HTTP $status"
expect "sandbox created -> catalog's fork" "200 catalog/pr-42 -" "$catalog/" pr-42
expect "the sandbox now forks reviews too" "200 reviews/pr-42 -" "$reviews/" pr-42
expect "two hops, both forked: the second sidecar routes by the forwarded baggage" \
  "200 reviews/pr-42 catalog/pr-42" "$catalog/call/reviews" pr-42

log "4. mode authority: no VirtualService needed"
kctx -n demo patch wasmplugin sandbox-router --type=json \
  -p '[{"op": "replace", "path": "/spec/pluginConfig/mode", "value": "authority"}]'
kctx -n demo delete virtualservice catalog reviews
expect "authority mode -> catalog's fork" "200 catalog/pr-42 -" "$catalog/" pr-42
expect "authority mode, two hops" "200 reviews/pr-42 catalog/pr-42" "$catalog/call/reviews" pr-42
expect "authority mode, no key -> baseline" "200 catalog/baseline -" "$catalog/"
kctx apply -f "$WORK_DIR/wasmplugin.yaml"
kctx apply -f "$REPO_ROOT/istio-config/sample/virtualservices.yaml"
expect "back to header mode" "200 catalog/pr-42 -" "$catalog/" pr-42

log "5. the filter's counters in the client's sidecar"
stats=$(kctx -n demo exec deploy/client -c istio-proxy -- pilot-agent request GET stats)
routed=$(awk -F': ' '$1 == "wasmcustom.sandbox_router.routed" { print $2 }' <<<"$stats")
[[ "${routed:-0}" -gt 0 ]] || fail "wasmcustom.sandbox_router.routed is '${routed:-absent}' in the client's sidecar stats"
ok "wasmcustom.sandbox_router.routed = $routed"
for counter in baseline no_key invalid_key spoofed_header_removed; do
  value=$(awk -F': ' -v name="wasmcustom.sandbox_router.$counter" '$1 == name { print $2 }' <<<"$stats")
  [[ "${value:-0}" -gt 0 ]] || fail "wasmcustom.sandbox_router.$counter is '${value:-absent}'"
  ok "wasmcustom.sandbox_router.$counter = $value"
done
prometheus=$(kctx -n demo exec deploy/client -c istio-proxy -- pilot-agent request GET stats/prometheus)
if grep -Eq '^(envoy_wasmcustom_)?sandbox_router_routed(\{| )' <<<"$prometheus"; then
  ok "Prometheus: $(grep -Em1 '^(envoy_wasmcustom_)?sandbox_router_routed(\{| )' <<<"$prometheus")"
else
  fail "no sandbox_router_routed in the sidecar's /stats/prometheus"
fi

log "6. fail-open: the RouteService scaled to zero"
kctx -n sandbox-system scale deployment/routeservice --replicas=0
no_routeservice_pods() {
  [[ -z "$(kctx -n sandbox-system get pods -l app.kubernetes.io/name=routeservice -o name)" ]]
}
retry 180 2 no_routeservice_pods || fail "the RouteService pods did not go away"
for _ in 1 2 3 4 5; do
  got=$(request "$catalog/" pr-42)
  [[ "$got" == "200 catalog/"* ]] || fail "RouteService down, routing key pr-42: expected 200 from catalog, got '$got'"
  got=$(request "$catalog/" "")
  [[ "$got" == "200 catalog/baseline -" ]] || fail "RouteService down, no key: expected baseline, got '$got'"
  got=$(request "$reviews/" pr-777)
  [[ "$got" == "200 reviews/baseline -" ]] || fail "RouteService down, unknown key: expected baseline, got '$got'"
  sleep 3
done
# Keyed requests may still reach the fork from the filter's last known table;
# what fail-open promises is that no request fails, and that nothing the
# RouteService never said goes anywhere but the baseline.
ok "RouteService down: every request answered 200 (no key and unknown keys from the baseline)"
kctx -n sandbox-system scale deployment/routeservice --replicas=1
kctx -n sandbox-system rollout status deployment/routeservice --timeout=300s
expect "RouteService back -> the sandbox again" "200 catalog/pr-42 -" "$catalog/" pr-42

log "e2e-kind: $passed checks passed"
printf '%s passed, 0 failed\n' "$passed"
