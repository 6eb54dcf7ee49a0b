//! A compiled plugin module: compile once, instantiate many times (per worker, per harness).

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use wasmtime::{Config, Engine, InstancePre, Linker, Module, Store};

use crate::error::{chain, HarnessError};
use crate::host::HostState;

/// How often the epoch ticker advances the engine's epoch: the resolution of wall-time budgets.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(5);

/// A proxy-wasm module compiled for the harness. Cheap to clone; share one across tests (e.g. in a
/// `OnceLock`) so the module is compiled once per test binary.
#[derive(Clone)]
pub struct Plugin {
    pub(crate) inner: Arc<PluginInner>,
}

pub(crate) struct PluginInner {
    pub engine: Engine,
    pub pre: InstancePre<HostState>,
    pub abi_version: Option<String>,
    /// Whether the epoch ticker thread for this engine started (tried by the first VM with a wall-time
    /// budget; a failure to spawn is kept, so every such VM reports it).
    pub ticker: OnceLock<Result<(), String>>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("abi_version", &self.inner.abi_version)
            .finish()
    }
}

impl Plugin {
    /// Reads and compiles a `.wasm` file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Plugin, HarnessError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| HarnessError::ReadModule {
            path: path.display().to_string(),
            source,
        })?;
        Plugin::from_bytes(&bytes)
    }

    /// Compiles a module from its binary bytes; fails on an import the harness does not provide.
    pub fn from_bytes(bytes: &[u8]) -> Result<Plugin, HarnessError> {
        let mut config = Config::new();
        config.consume_fuel(true);
        // Wall-time budgets (live mode) interrupt a callback at an epoch deadline; without a ticker the
        // epoch never moves and the checks never fire.
        config.epoch_interruption(true);
        // `perf record` can name the plugin's functions when the JIT writes a perf map.
        if std::env::var_os("PROXY_WASM_HARNESS_PERFMAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let compile = |e: wasmtime::Error| HarnessError::Compile(e.into_boxed_dyn_error());
        let engine = Engine::new(&config).map_err(compile)?;
        let module = Module::from_binary(&engine, bytes).map_err(compile)?;
        let mut linker: Linker<HostState> = Linker::new(&engine);
        crate::abi::add_to_linker(&mut linker).map_err(compile)?;

        let mut probe = Store::new(&engine, HostState::probe());
        for import in module.imports() {
            if linker
                .get(&mut probe, import.module(), import.name())
                .is_err()
            {
                return Err(HarnessError::UnknownImport {
                    module: import.module().to_string(),
                    name: import.name().to_string(),
                });
            }
        }
        let abi_version = module
            .exports()
            .map(|e| e.name())
            .find(|n| n.starts_with("proxy_abi_version_"))
            .map(|n| n.trim_start_matches("proxy_abi_version_").replace('_', "."));
        if abi_version.as_deref() == Some("0.1.0") {
            return Err(HarnessError::Instantiate(
                "module targets proxy-wasm ABI 0.1.0; the harness implements 0.2.x".into(),
            ));
        }
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| HarnessError::Instantiate(chain(&e)))?;
        Ok(Plugin {
            inner: Arc::new(PluginInner {
                engine,
                pre,
                abi_version,
                ticker: OnceLock::new(),
            }),
        })
    }

    /// The proxy-wasm ABI version the module declares (e.g. `0.2.1`), if any.
    pub fn abi_version(&self) -> Option<&str> {
        self.inner.abi_version.as_deref()
    }
}

impl Plugin {
    /// Starts (once per compiled plugin) the thread that advances the engine's epoch every `EPOCH_TICK`.
    /// It holds only a weak reference and ends when the last clone of the plugin is gone.
    pub(crate) fn start_epoch_ticker(&self) -> Result<(), HarnessError> {
        let started = self.inner.ticker.get_or_init(|| {
            let weak = self.inner.engine.weak();
            std::thread::Builder::new()
                .name("proxy-wasm-epoch".into())
                .spawn(move || loop {
                    std::thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                })
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
        started.clone().map_err(|e| {
            HarnessError::Invalid(format!(
                "cannot start the epoch ticker thread for wall-time budgets: {e}"
            ))
        })
    }
}
