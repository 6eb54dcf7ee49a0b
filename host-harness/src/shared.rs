//! ABI state that every VM of a plugin shares, as in Envoy where shared data, shared queues and stats are
//! process-wide: one [`SharedState`] per host, cloned into every VM, thread-safe so that a server can run one
//! VM per thread on it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::HarnessError;
use crate::types::{MetricKind, Status};

/// A foreign function a test registers: bytes in, bytes out (or a status).
pub type ForeignFunction = Arc<dyn Fn(&[u8]) -> Result<Vec<u8>, Status> + Send + Sync>;

/// The name of Envoy's foreign function that makes the router match the current request's route again.
pub const CLEAR_ROUTE_CACHE: &str = "clear_route_cache";

/// A foreign function the host offers under some name.
#[derive(Clone)]
pub(crate) enum Foreign {
    /// Bytes in, bytes out: `verify_signature`, or one a test registered.
    Function(ForeignFunction),
    /// Envoy's `clear_route_cache`: it acts on the calling stream, which a [`ForeignFunction`] cannot see.
    ClearRouteCache,
}

/// A metric defined by the plugin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metric {
    /// Name as defined.
    pub name: String,
    /// Kind.
    pub kind: MetricKind,
    /// Current value (counter, gauge); for a histogram the last recorded value.
    pub value: i64,
    /// All recorded values (histogram only).
    pub samples: Vec<u64>,
}

/// Identifies one VM among all VMs holding the same [`SharedState`] (harness worker indices repeat across
/// harnesses; these do not).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VmKey(pub(crate) u64);

/// A shared-data value with its compare-and-swap token.
#[derive(Clone, Debug)]
pub(crate) struct SharedValue {
    pub(crate) bytes: Vec<u8>,
    pub(crate) cas: u32,
}

/// Who gets `proxy_on_queue_ready` for a queue: the VM and root context that registered it last.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct QueueOwner {
    pub(crate) vm: VmKey,
    pub(crate) context_id: u32,
}

pub(crate) struct Queue {
    pub(crate) vm_id: String,
    pub(crate) name: String,
    pub(crate) items: VecDeque<Vec<u8>>,
    pub(crate) owner: QueueOwner,
}

/// A `proxy_on_queue_ready` the owner's VM still has to receive.
#[derive(Copy, Clone, Debug)]
pub(crate) struct QueueNotice {
    pub(crate) owner: QueueOwner,
    /// The queue id the plugin knows (index + 1 into `queues`).
    pub(crate) queue: u32,
}

pub(crate) struct Abi {
    pub(crate) shared_data: HashMap<String, SharedValue>,
    next_cas: u32,
    /// Queue ids handed to plugins are `index + 1`; queues are never removed, so an id stays valid.
    pub(crate) queues: Vec<Queue>,
    pub(crate) notices: VecDeque<QueueNotice>,
    /// Metric ids handed to plugins are `index + 1`; metrics are never removed.
    pub(crate) metrics: Vec<Metric>,
    pub(crate) properties: HashMap<String, Vec<u8>>,
    pub(crate) foreign: HashMap<String, Foreign>,
    pub(crate) vm_id: String,
}

impl Abi {
    /// The next CAS token; 0 means "no CAS" in the ABI, so it is skipped.
    pub(crate) fn next_cas(&mut self) -> u32 {
        let cas = self.next_cas;
        self.next_cas = self.next_cas.wrapping_add(1).max(1);
        cas
    }

    pub(crate) fn set_shared(&mut self, key: &str, bytes: Vec<u8>) {
        let cas = self.next_cas();
        self.shared_data
            .insert(key.to_string(), SharedValue { bytes, cas });
    }

    pub(crate) fn queue_index(&self, vm_id: &str, name: &str) -> Option<usize> {
        self.queues
            .iter()
            .position(|q| q.vm_id == vm_id && q.name == name)
    }
}

/// Shared data, shared queues, metrics, host-wide properties and foreign functions, for every VM that holds a
/// clone. Cheap to clone; `Send + Sync`.
///
/// ```
/// use proxy_wasm_harness::SharedState;
/// let shared = SharedState::new("my-vm");
/// shared.set_shared_data("k", b"v".to_vec());
/// assert_eq!(shared.shared_data("k").map(|(v, _)| v), Some(b"v".to_vec()));
/// ```
#[derive(Clone)]
pub struct SharedState {
    abi: Arc<Mutex<Abi>>,
    next_vm: Arc<AtomicU64>,
}

impl std::fmt::Debug for SharedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let abi = self.lock();
        f.debug_struct("SharedState")
            .field("vm_id", &abi.vm_id)
            .field("keys", &abi.shared_data.len())
            .field("queues", &abi.queues.len())
            .field("metrics", &abi.metrics.len())
            .finish()
    }
}

impl Default for SharedState {
    fn default() -> Self {
        SharedState::new("")
    }
}

impl SharedState {
    /// An empty store for VMs with the given VM id (the `plugin_vm_id` property, and the namespace of shared
    /// queues). Envoy registers `verify_signature` and `clear_route_cache` for every plugin; so does this
    /// store.
    pub fn new(vm_id: &str) -> SharedState {
        SharedState {
            abi: Arc::new(Mutex::new(Abi {
                shared_data: HashMap::new(),
                next_cas: 1,
                queues: Vec::new(),
                notices: VecDeque::new(),
                metrics: Vec::new(),
                properties: HashMap::new(),
                foreign: HashMap::from([
                    (
                        crate::envoy_crypto::VERIFY_SIGNATURE.to_string(),
                        Foreign::Function(Arc::new(crate::envoy_crypto::verify_signature)),
                    ),
                    (CLEAR_ROUTE_CACHE.to_string(), Foreign::ClearRouteCache),
                ]),
                vm_id: vm_id.to_string(),
            })),
            next_vm: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Locks the store, ignoring poisoning: a test thread that panicked must not hide the state from others.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Abi> {
        self.abi.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A key for a new VM on this store.
    pub(crate) fn register_vm(&self) -> VmKey {
        VmKey(self.next_vm.fetch_add(1, Ordering::Relaxed))
    }

    /// The VM id these VMs share.
    pub fn vm_id(&self) -> String {
        self.lock().vm_id.clone()
    }

    /// A shared-data value and its CAS token.
    pub fn shared_data(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.lock()
            .shared_data
            .get(key)
            .map(|v| (v.bytes.clone(), v.cas))
    }

    /// Sets a shared-data value (a new CAS token is assigned).
    pub fn set_shared_data(&self, key: &str, value: Vec<u8>) {
        self.lock().set_shared(key, value);
    }

    /// The value of a counter or gauge by name.
    pub fn metric(&self, name: &str) -> Option<i64> {
        self.lock()
            .metrics
            .iter()
            .find(|m| m.name == name && m.kind != MetricKind::Histogram)
            .map(|m| m.value)
    }

    /// The values recorded in a histogram by name.
    pub fn histogram(&self, name: &str) -> Option<Vec<u64>> {
        self.lock()
            .metrics
            .iter()
            .find(|m| m.name == name && m.kind == MetricKind::Histogram)
            .map(|m| m.samples.clone())
    }

    /// All metrics the plugins defined.
    pub fn metrics(&self) -> Vec<Metric> {
        self.lock().metrics.clone()
    }

    /// Items left in a shared queue (by name, in this store's VM id), oldest first.
    pub fn queue_items(&self, queue: &str) -> Option<Vec<Vec<u8>>> {
        let abi = self.lock();
        abi.queue_index(&abi.vm_id, queue)
            .and_then(|i| abi.queues.get(i))
            .map(|q| q.items.iter().cloned().collect())
    }

    /// Pushes an item onto a registered queue and schedules `proxy_on_queue_ready` for its owner; the VM that
    /// owns it delivers the notice the next time its host runs what is due.
    pub fn enqueue(&self, queue: &str, item: Vec<u8>) -> Result<(), HarnessError> {
        let mut abi = self.lock();
        let vm_id = abi.vm_id.clone();
        let index = abi.queue_index(&vm_id, queue).ok_or_else(|| {
            HarnessError::Invalid(format!("no shared queue named `{queue}` is registered"))
        })?;
        let owner = {
            let Some(q) = abi.queues.get_mut(index) else {
                return Err(HarnessError::Invalid(format!("queue `{queue}` vanished")));
            };
            q.items.push_back(item);
            q.owner
        };
        abi.notices.push_back(QueueNotice {
            owner,
            queue: index as u32 + 1,
        });
        Ok(())
    }

    /// Takes the oldest queue notice for a VM that `mine` accepts.
    pub(crate) fn take_notice(&self, mine: impl Fn(VmKey) -> bool) -> Option<QueueNotice> {
        let mut abi = self.lock();
        let i = abi.notices.iter().position(|n| mine(n.owner.vm))?;
        abi.notices.remove(i)
    }

    /// Sets a host-wide property (dot-separated path).
    pub fn set_property(&self, path: &str, value: Vec<u8>) {
        self.lock().properties.insert(path.to_string(), value);
    }

    /// Registers (or replaces) a foreign function; one replacing `clear_route_cache` no longer counts clears.
    pub fn register_foreign_function(&self, name: &str, f: ForeignFunction) {
        self.lock()
            .foreign
            .insert(name.to_string(), Foreign::Function(f));
    }

    /// Removes a foreign function (built-in ones included).
    pub fn remove_foreign_function(&self, name: &str) {
        self.lock().foreign.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_skips_zero() {
        let s = SharedState::new("");
        s.lock().next_cas = u32::MAX;
        s.set_shared_data("a", vec![1]);
        s.set_shared_data("b", vec![2]);
        assert_eq!(s.shared_data("a").map(|v| v.1), Some(u32::MAX));
        assert_eq!(s.shared_data("b").map(|v| v.1), Some(1));
    }

    #[test]
    fn shared_state_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<SharedState>();
    }
}
