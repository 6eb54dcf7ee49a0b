//! The host functions of proxy-wasm ABI 0.2.1 (module `env`) and WASI preview1, one file per family.
//!
//! Every host function checks guest pointers: an out-of-bounds pointer traps the guest (like Envoy, which
//! treats it as a fatal VM error).

use wasmtime::{Caller, Linker, Result};

use crate::host::HostState;

mod buffers;
mod context;
mod foreign;
mod grpc;
mod headers;
mod http_call;
mod log;
mod metrics;
mod properties;
mod shared_data;
mod shared_queue;
mod stream;
mod time;
mod wasi;

pub(crate) use properties::lookup as property_lookup;

/// Adds every host function the harness provides to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> Result<()> {
    log::add(linker)?;
    headers::add(linker)?;
    buffers::add(linker)?;
    http_call::add(linker)?;
    grpc::add(linker)?;
    shared_data::add(linker)?;
    shared_queue::add(linker)?;
    metrics::add(linker)?;
    time::add(linker)?;
    properties::add(linker)?;
    stream::add(linker)?;
    context::add(linker)?;
    foreign::add(linker)?;
    wasi::add(linker, "wasi_snapshot_preview1")?;
    wasi::add(linker, "wasi_unstable")?;
    Ok(())
}

pub(crate) type Ctx<'a> = Caller<'a, HostState>;

fn memory(caller: &Ctx<'_>) -> Result<wasmtime::Memory> {
    caller
        .data()
        .memory
        .ok_or_else(|| wasmtime::Error::msg("module exports no memory"))
}

fn range(ptr: i32, len: i32, mem_len: usize, what: &str) -> Result<std::ops::Range<usize>> {
    let start = ptr as u32 as usize;
    let len = len as u32 as usize;
    match start.checked_add(len) {
        Some(end) if end <= mem_len => Ok(start..end),
        _ => Err(wasmtime::Error::msg(format!(
            "out-of-bounds guest pointer in {what}: {start:#x}+{len} past memory size {mem_len:#x}"
        ))),
    }
}

/// Reads `len` bytes at `ptr`; traps when out of bounds.
pub(crate) fn read(caller: &Ctx<'_>, ptr: i32, len: i32, what: &str) -> Result<Vec<u8>> {
    let mem = memory(caller)?;
    let data = mem.data(caller);
    let r = range(ptr, len, data.len(), what)?;
    Ok(data[r].to_vec())
}

/// Reads a UTF-8 (lossy) string.
pub(crate) fn read_string(caller: &Ctx<'_>, ptr: i32, len: i32, what: &str) -> Result<String> {
    Ok(String::from_utf8_lossy(&read(caller, ptr, len, what)?).into_owned())
}

/// Writes bytes at `ptr`; traps when out of bounds.
pub(crate) fn write(caller: &mut Ctx<'_>, ptr: i32, bytes: &[u8], what: &str) -> Result<()> {
    let mem = memory(caller)?;
    let data = mem.data_mut(&mut *caller);
    let r = range(ptr, bytes.len() as i32, data.len(), what)?;
    data[r].copy_from_slice(bytes);
    Ok(())
}

/// Writes a little-endian u32.
pub(crate) fn write_u32(caller: &mut Ctx<'_>, ptr: i32, v: u32, what: &str) -> Result<()> {
    write(caller, ptr, &v.to_le_bytes(), what)
}

/// Writes a little-endian u64.
pub(crate) fn write_u64(caller: &mut Ctx<'_>, ptr: i32, v: u64, what: &str) -> Result<()> {
    write(caller, ptr, &v.to_le_bytes(), what)
}

/// Copies `bytes` into guest memory allocated with the plugin's allocator and stores pointer and size at
/// `ptr_ptr` / `size_ptr`. Empty data is returned as a null pointer with size 0 (as Envoy does).
pub(crate) fn copy_out(
    caller: &mut Ctx<'_>,
    bytes: &[u8],
    ptr_ptr: i32,
    size_ptr: i32,
    what: &str,
) -> Result<()> {
    let mut addr = 0i32;
    if !bytes.is_empty() {
        let alloc = caller.data().alloc.clone().ok_or_else(|| {
            wasmtime::Error::msg("module exports neither proxy_on_memory_allocate nor malloc")
        })?;
        addr = alloc.call(&mut *caller, bytes.len() as i32)?;
        if addr == 0 {
            return Err(wasmtime::Error::msg(format!(
                "guest allocator returned null for {} bytes in {what}",
                bytes.len()
            )));
        }
        write(caller, addr, bytes, what)?;
    }
    write_u32(caller, ptr_ptr, addr as u32, what)?;
    write_u32(caller, size_ptr, bytes.len() as u32, what)?;
    Ok(())
}
