//! A compiled plugin module: compile once, instantiate many times (per worker, per harness).

use std::path::Path;
use std::sync::Arc;

use wasmtime::{Config, Engine, InstancePre, Linker, Module, Store};

use crate::error::HarnessError;
use crate::host::HostState;

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
        // `perf record` can name the plugin's functions when the JIT writes a perf map.
        if std::env::var_os("PROXY_WASM_HARNESS_PERFMAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config).map_err(|e| HarnessError::Compile(e.to_string()))?;
        let module =
            Module::from_binary(&engine, bytes).map_err(|e| HarnessError::Compile(chain(&e)))?;
        let mut linker: Linker<HostState> = Linker::new(&engine);
        crate::abi::add_to_linker(&mut linker).map_err(|e| HarnessError::Compile(chain(&e)))?;

        let mut probe = Store::new(&engine, crate::harness::probe_state());
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
            }),
        })
    }

    /// The proxy-wasm ABI version the module declares (e.g. `0.2.1`), if any.
    pub fn abi_version(&self) -> Option<&str> {
        self.inner.abi_version.as_deref()
    }
}

/// Renders an error with its causes.
pub(crate) fn chain(e: &wasmtime::Error) -> String {
    e.chain()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}
