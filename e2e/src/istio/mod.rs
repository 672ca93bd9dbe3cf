//! The local Istio mesh (INTERFACES section 9): real etcd, kube-apiserver,
//! istiod and pilot-agent, built from their pinned Go modules, driving real
//! Envoys that pull the plugin from a local registry. See `docs/istio.md`
//! ("A local Istio mesh").
//!
//! - [`tools`]: where the binaries are;
//! - [`process`]: their processes and logs;
//! - [`pki`]: the run's certificates;
//! - [`kube`]: etcd, kube-apiserver, kubectl;
//! - [`registry`]: the OCI registry and skopeo;
//! - [`istiod`]: the control plane;
//! - [`agent`]: sidecars and the gateway (pilot-agent + Envoy);
//! - [`local_mesh`]: all of it put together, as `make istio-up` runs it;
//! - [`probe`]: what the tests ask of it (who served a request, how long
//!   until a change shows).

pub mod agent;
pub mod istiod;
pub mod kube;
pub mod local_mesh;
pub mod pki;
pub mod probe;
pub mod process;
pub mod registry;
pub mod tools;
