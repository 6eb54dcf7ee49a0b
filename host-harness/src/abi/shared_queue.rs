//! Shared queues: register, resolve, enqueue, dequeue. Enqueueing schedules `proxy_on_queue_ready` on the VM
//! and root context that registered the queue (delivered by that VM's scheduler after the current call).

use wasmtime::{Linker, Result};

use super::{copy_out, read, read_string, write_u32, Ctx};
use crate::host::HostState;
use crate::shared::{Queue, QueueNotice, QueueOwner};
use crate::types::Status;

pub(super) fn add(linker: &mut Linker<HostState>) -> Result<()> {
    linker.func_wrap(
        "env",
        "proxy_register_shared_queue",
        |mut caller: Ctx<'_>, np: i32, ns: i32, out: i32| -> Result<i32> {
            const NAME: &str = "proxy_register_shared_queue";
            let name = read_string(&caller, np, ns, NAME)?;
            let state = caller.data();
            let owner = QueueOwner {
                vm: state.vm,
                context_id: state.effective,
            };
            let token = {
                let mut w = state.shared.lock();
                let vm_id = w.vm_id.clone();
                match w.queue_index(&vm_id, &name) {
                    // `queue_index` returned a position in `queues`.
                    Some(i) if i < w.queues.len() => {
                        w.queues[i].owner = owner;
                        i as u32 + 1
                    }
                    _ => {
                        w.queues.push(Queue {
                            vm_id,
                            name,
                            items: Default::default(),
                            owner,
                        });
                        w.queues.len() as u32
                    }
                }
            };
            write_u32(&mut caller, out, token, NAME)?;
            Ok(Status::Ok.code())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_resolve_shared_queue",
        |mut caller: Ctx<'_>, vp: i32, vs: i32, np: i32, ns: i32, out: i32| -> Result<i32> {
            const NAME: &str = "proxy_resolve_shared_queue";
            let vm_id = read_string(&caller, vp, vs, NAME)?;
            let name = read_string(&caller, np, ns, NAME)?;
            let found = {
                let w = caller.data().shared.lock();
                let vm_id = if vm_id.is_empty() {
                    w.vm_id.clone()
                } else {
                    vm_id
                };
                w.queue_index(&vm_id, &name)
            };
            match found {
                Some(i) => {
                    write_u32(&mut caller, out, i as u32 + 1, NAME)?;
                    Ok(Status::Ok.code())
                }
                None => Ok(Status::NotFound.code()),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_enqueue_shared_queue",
        |caller: Ctx<'_>, token: i32, dp: i32, ds: i32| -> Result<i32> {
            const NAME: &str = "proxy_enqueue_shared_queue";
            let data = read(&caller, dp, ds, NAME)?;
            let mut w = caller.data().shared.lock();
            let index = (token as u32 as usize).wrapping_sub(1);
            let Some(q) = w.queues.get_mut(index) else {
                return Ok(Status::NotFound.code());
            };
            q.items.push_back(data);
            let owner = q.owner;
            w.notices.push_back(QueueNotice {
                owner,
                queue: token as u32,
            });
            Ok(Status::Ok.code())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_dequeue_shared_queue",
        |mut caller: Ctx<'_>, token: i32, ptr_ptr: i32, size_ptr: i32| -> Result<i32> {
            const NAME: &str = "proxy_dequeue_shared_queue";
            let item = {
                let mut w = caller.data().shared.lock();
                let index = (token as u32 as usize).wrapping_sub(1);
                let Some(q) = w.queues.get_mut(index) else {
                    return Ok(Status::NotFound.code());
                };
                q.items.pop_front()
            };
            match item {
                None => Ok(Status::Empty.code()),
                Some(v) => {
                    copy_out(&mut caller, &v, ptr_ptr, size_ptr, NAME)?;
                    Ok(Status::Ok.code())
                }
            }
        },
    )?;
    Ok(())
}
