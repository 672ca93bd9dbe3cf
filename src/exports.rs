//! The callbacks the host makes into the module (proxy-wasm ABI 0.2.1), and
//! which root context or request each one goes to.
//!
//! The module exports only the callbacks the filter needs. Envoy skips a
//! callback a module does not export, and each one it makes is a call from
//! C++ into V8, about 1,500 Envoy instructions on every request whether
//! the callback does anything or not (docs/performance.md). A request costs
//! four: `proxy_on_context_create` (which plugin's root the request belongs
//! to), `proxy_on_request_headers`, `proxy_on_response_headers` and
//! `proxy_on_log`, the last one of every stream (Envoy logs every stream,
//! a reset one too). Not exported: `proxy_on_done` and `proxy_on_delete`
//! (what a request leaves is dropped in its `proxy_on_log`), the body and
//! trailer callbacks, and the VM's start (nothing to do then).
//!
//! A request keeps state between callbacks only when it has some (parked,
//! a lookup in flight, a cookie to set, an inbound request, a marking to
//! check): most requests leave nothing behind, and their later callbacks
//! only find the root's worker.

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::rc::Rc;

use crate::abi::Action;
use crate::context_map::ContextMap;
use crate::filter::RequestFilter;
use crate::pass_through;
use crate::root::{Mode, Root};

/// The plugins (root contexts) of this VM and their requests.
#[derive(Default)]
struct Plugins {
    /// Root contexts by id, in the order the host created them. Envoy gives
    /// one VM several roots when plugins share its code and VM
    /// configuration.
    roots: Vec<(u32, Rc<RefCell<Root>>)>,
    /// Which root each request belongs to, kept only for requests created
    /// while the VM had more than one root (a request created while there
    /// was one belongs to the first).
    owners: ContextMap<u32, u32>,
    /// Requests with state to keep until their next callback.
    requests: ContextMap<u32, RequestFilter>,
    /// Which request made each call in flight, by (root id, token). The
    /// host makes a call on the root context of the request that asked
    /// (proxy-wasm-cpp-host's `http_call`), numbers it per root, and hands
    /// the answer to that root.
    callouts: ContextMap<(u32, u32), u32>,
}

thread_local! {
    static PLUGINS: RefCell<Plugins> = RefCell::new(Plugins::default());
}

impl Plugins {
    fn root(&self, root_id: u32) -> Option<Rc<RefCell<Root>>> {
        self.roots
            .iter()
            .find(|(id, _)| *id == root_id)
            .map(|(_, root)| Rc::clone(root))
    }

    /// The id of the root request `context_id` belongs to.
    fn root_id_for(&self, context_id: u32) -> Option<u32> {
        match self.owners.get(&context_id) {
            Some(root_id) => Some(*root_id),
            None => self.roots.first().map(|(id, _)| *id),
        }
    }

    /// The mode of the root request `context_id` belongs to.
    fn mode_for(&self, context_id: u32) -> Option<Mode> {
        let root_id = self.root_id_for(context_id)?;
        let (_, root) = self.roots.iter().find(|(id, _)| *id == root_id)?;
        root.try_borrow().ok()?.mode().cloned()
    }
}

/// Runs `f` on the plugins; `None` if they are in use (a host calling back
/// into the module from within a host call, which Envoy does not do).
fn with_plugins<T>(f: impl FnOnce(&mut Plugins) -> T) -> Option<T> {
    PLUGINS.with(|plugins| plugins.try_borrow_mut().ok().map(|mut p| f(&mut p)))
}

/// Request `context_id`'s filter: the one it kept, or a new one from its
/// root's worker (`None` for a pass-through or an unconfigured root).
fn request(context_id: u32) -> Option<RequestFilter> {
    with_plugins(|plugins| match take_kept(plugins, context_id) {
        Some(filter) => Some(filter),
        None => match plugins.mode_for(context_id)? {
            Mode::Routing(worker) => Some(RequestFilter::new(context_id, worker)),
            Mode::PassThrough { .. } => None,
        },
    })
    .flatten()
}

/// The filter request `context_id` kept, if any (most keep none: no
/// hashing then).
fn take_kept(plugins: &mut Plugins, context_id: u32) -> Option<RequestFilter> {
    if plugins.requests.is_empty() {
        return None;
    }
    plugins.requests.remove(&context_id)
}

/// Keeps `filter` for its request's next callback if it has state, and
/// notes which request the call it waits for belongs to, if it waits for
/// one.
fn keep(filter: RequestFilter) {
    if !filter.has_state() {
        return;
    }
    with_plugins(|plugins| {
        let context_id = filter.context_id();
        if let Some(token) = filter.call_token() {
            if let Some(root_id) = plugins.root_id_for(context_id) {
                plugins.callouts.insert((root_id, token), context_id);
            }
        }
        plugins.requests.insert(context_id, filter);
    });
}

#[allow(unsafe_code)]
mod entry_points {
    use super::*;

    #[cfg(target_os = "wasi")]
    extern "C" {
        fn __wasm_call_ctors();
    }

    /// The WASI reactor's initialisation: once, before any callback.
    #[no_mangle]
    pub extern "C" fn _initialize() {
        // SAFETY: called once by the host before anything else, as the
        // WASI reactor ABI requires.
        #[cfg(target_os = "wasi")]
        unsafe {
            __wasm_call_ctors();
        }
        crate::logger::install();
        // panic = "abort" already kills the VM; the hook makes the reason
        // visible in Envoy's log instead of a bare Wasm trap. Where, not the
        // payload: formatting any payload would pull a good part of `std`'s
        // formatting into the `.wasm` for a path never taken.
        std::panic::set_hook(Box::new(|info| match info.location() {
            Some(at) => log::error!("sandbox-router: panic at {}:{}", at.file(), at.line()),
            None => log::error!("sandbox-router: panic"),
        }));
    }

    /// The ABI version this module speaks (its name is the marker).
    #[no_mangle]
    pub extern "C" fn proxy_abi_version_0_2_1() {}

    /// Memory for a value the host hands over: a boxed `[u8]` of exactly
    /// `size`, leaked; [`crate::host`] takes it back as a `Vec` of that
    /// capacity.
    #[no_mangle]
    pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
        Box::into_raw(Box::<[MaybeUninit<u8>]>::new_uninit_slice(size)).cast::<u8>()
    }

    /// A root context (`parent` 0: a plugin) or a request.
    #[no_mangle]
    pub extern "C" fn proxy_on_context_create(context_id: u32, parent: u32) {
        with_plugins(|plugins| {
            if parent == 0 {
                if plugins.root(context_id).is_none() {
                    let root = Rc::new(RefCell::new(Root::default()));
                    plugins.roots.push((context_id, root));
                }
            } else if plugins.roots.len() > 1 {
                plugins.owners.insert(context_id, parent);
            }
        });
    }

    #[no_mangle]
    pub extern "C" fn proxy_on_configure(root_id: u32, _configuration_size: usize) -> u32 {
        let Some(root) = with_plugins(|plugins| plugins.root(root_id)).flatten() else {
            return 1;
        };
        // A configuration is never refused to the host (crate::root).
        if let Ok(mut root) = root.try_borrow_mut() {
            root.on_configure();
        }
        1
    }

    #[no_mangle]
    pub extern "C" fn proxy_on_tick(root_id: u32) {
        let Some(root) = with_plugins(|plugins| plugins.root(root_id)).flatten() else {
            return;
        };
        if let Ok(mut root) = root.try_borrow_mut() {
            root.on_tick();
        };
    }

    #[no_mangle]
    pub extern "C" fn proxy_on_request_headers(
        context_id: u32,
        _num_headers: usize,
        _end_of_stream: u32,
    ) -> u32 {
        let Some(mode) = with_plugins(|plugins| plugins.mode_for(context_id)).flatten() else {
            return Action::Continue as u32;
        };
        match mode {
            Mode::Routing(worker) => {
                let mut filter = RequestFilter::new(context_id, worker);
                let action = filter.on_request_headers();
                keep(filter);
                action as u32
            }
            Mode::PassThrough { pass, metrics } => {
                pass_through::on_request_headers(&pass, &metrics);
                Action::Continue as u32
            }
        }
    }

    #[no_mangle]
    pub extern "C" fn proxy_on_response_headers(
        context_id: u32,
        _num_headers: usize,
        _end_of_stream: u32,
    ) -> u32 {
        if let Some(mut filter) = request(context_id) {
            filter.on_response_headers();
            keep(filter);
        }
        Action::Continue as u32
    }

    /// The stream is over (Envoy's access log phase, for every stream): the
    /// request's last callback here.
    #[no_mangle]
    pub extern "C" fn proxy_on_log(context_id: u32) {
        if let Some(mut filter) = request(context_id) {
            filter.on_log();
        }
        with_plugins(|plugins| {
            if !plugins.owners.is_empty() {
                plugins.owners.remove(&context_id);
            }
            // A call of an ended request: its answer is not waited for.
            if !plugins.callouts.is_empty() {
                plugins.callouts.retain(|_, request| *request != context_id);
            }
        });
    }

    /// The answer to a call, handed to the root that made it: the table
    /// sync's own, or a request's lookup.
    #[no_mangle]
    pub extern "C" fn proxy_on_http_call_response(
        root_id: u32,
        token: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let (request, root) =
            with_plugins(|plugins| match plugins.callouts.remove(&(root_id, token)) {
                Some(context_id) => (take_kept(plugins, context_id), None),
                None => (None, plugins.root(root_id)),
            })
            .unwrap_or((None, None));
        if let Some(mut filter) = request {
            filter.on_http_call_response(token, num_headers, body_size);
            keep(filter);
        } else if let Some(root) = root {
            if let Ok(mut root) = root.try_borrow_mut() {
                root.on_http_call_response(token, num_headers, body_size);
            };
        }
    }
}
