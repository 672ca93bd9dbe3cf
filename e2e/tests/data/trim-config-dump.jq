# Trims an Envoy admin /config_dump of a caller sidecar to what the
# sandbox-router plugin sees on the outbound HTTP path; see README.md.
# Usage: jq --arg listener 127.0.0.1_8080 -f trim-config-dump.jq config_dump.json
def section(t): .configs[] | select(."@type" == "type.googleapis.com/envoy.admin.v3." + t);
(section("ListenersConfigDump").dynamic_listeners[]
  | select(.name == $listener) | .active_state.listener) as $listener
| ($listener.filter_chains[0].filters[0].typed_config) as $hcm
| {
    listener: {name: $listener.name, traffic_direction: $listener.traffic_direction},
    http_connection_manager: ($hcm | {
      rds, http_filters, use_remote_address, normalize_path,
      path_with_escaped_slashes_action, proxy_100_continue,
      stream_idle_timeout, upgrade_configs, request_id_extension
    }),
    ecds: [section("EcdsConfigDump").ecds_filters[].ecds_filter
      | .typed_config.config.vm_config.code.local.filename = "<pulled by pilot-agent>"],
    route_config: (section("RoutesConfigDump").dynamic_route_configs[].route_config
      | select(.name == $hcm.rds.route_config_name) | del(."@type")),
    clusters: [section("ClustersConfigDump").dynamic_active_clusters[].cluster
      | {name, type, connect_timeout, lb_policy, circuit_breakers, metadata,
         common_lb_config, alt_stat_name}
      | with_entries(select(.value != null))]
  }
