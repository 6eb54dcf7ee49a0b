//! SPOP connections from HAProxy: the handshake, then NOTIFY in, ACK out, on plain threads (HAProxy
//! opens few, long-lived connections to an agent; each gets a reader thread, and the ACKs of its
//! pipelined requests are written whole, one frame per write, from the VM threads).

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use proxy_wasm_harness::LogLevel;

use crate::logs::agent_line;
use crate::plan;
use crate::request;
use crate::spop::{
    agent_hello, decode_frame, disconnect, encode_frame, frame_length, Action, Frame, HaproxyHello,
    SpopError, SpopStatus, TypedData, VarScope,
};
use crate::verdict::{self, Value, Var};
use crate::workers::{Job, VmPool};

/// How the agent talks SPOP.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    /// The largest frame the agent accepts and sends (HAProxy's is `tune.bufsize - 4`).
    pub max_frame_size: u32,
    /// Connections beyond this are closed at once.
    pub max_connections: usize,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            max_frame_size: 16_380,
            max_connections: 1024,
        }
    }
}

/// The longest an ACK write may block before the connection is given up.
const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Accepts connections until the listener fails.
pub fn serve(listener: TcpListener, pool: Arc<VmPool>, settings: ServerSettings) {
    let open = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let Ok(stream) = stream else {
            // Out of descriptors, say: do not spin on accept.
            std::thread::sleep(std::time::Duration::from_millis(10));
            continue;
        };
        if open.load(Ordering::Relaxed) >= settings.max_connections {
            drop(stream);
            continue;
        }
        open.fetch_add(1, Ordering::Relaxed);
        let (pool, settings, open) = (pool.clone(), settings.clone(), open.clone());
        let spawned = std::thread::Builder::new()
            .name("spop-conn".into())
            .spawn(move || {
                if let Ok(conn) = Connection::new(stream, settings) {
                    conn.run(&pool);
                }
                open.fetch_sub(1, Ordering::Relaxed);
            });
        if spawned.is_err() {
            agent_line(LogLevel::Error, "cannot start a connection thread");
        }
    }
}

/// Why a connection ended, when not by HAProxy's own choice.
enum End {
    /// HAProxy closed it or said goodbye.
    Closed,
    /// The agent ends it with this status.
    Error(SpopStatus, String),
}

struct Connection {
    reader: TcpStream,
    writer: Arc<Mutex<TcpStream>>,
    settings: ServerSettings,
    max_frame: u32,
}

fn write_frame(writer: &Mutex<TcpStream>, frame: &Frame, max: u32) -> std::io::Result<()> {
    let bytes =
        encode_frame(frame, max).map_err(|e| std::io::Error::new(ErrorKind::InvalidData, e))?;
    let mut w = writer.lock().unwrap_or_else(|e| e.into_inner());
    w.write_all(&bytes)
}

/// The ACK for a request's variables; when they do not fit in a frame (a huge reply body), the
/// refusal instead, which always fits.
fn ack_frame(stream_id: u64, frame_id: u64, vars: Vec<Var>, max: u32) -> Vec<u8> {
    let frame = |vars: Vec<Var>| Frame::Ack {
        stream_id,
        frame_id,
        actions: vars.into_iter().map(action).collect(),
    };
    match encode_frame(&frame(vars), max) {
        Ok(bytes) => bytes,
        Err(_) => {
            let r = verdict::Refusal::Unavailable("the verdict does not fit in one SPOP frame");
            encode_frame(&frame(verdict::refused(&r)), max).unwrap_or_default()
        }
    }
}

fn action(var: Var) -> Action {
    Action::SetVar {
        scope: VarScope::Transaction,
        name: var.name,
        value: match var.value {
            Value::Bool(b) => TypedData::Bool(b),
            Value::Int(i) => TypedData::Int64(i),
            Value::Str(s) => TypedData::String(s),
        },
    }
}

impl Connection {
    fn new(stream: TcpStream, settings: ServerSettings) -> std::io::Result<Connection> {
        stream.set_nodelay(true)?;
        // ACKs are written from the VM threads: a peer that stops reading must not stall a VM.
        stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        let writer = Arc::new(Mutex::new(stream.try_clone()?));
        Ok(Connection {
            max_frame: settings.max_frame_size,
            reader: stream,
            writer,
            settings,
        })
    }

    /// The next frame; `None` for one to skip (an unknown type, or an aborted fragment series).
    fn read_frame(&mut self) -> Result<Option<Frame>, End> {
        let mut prefix = [0u8; 4];
        self.reader
            .read_exact(&mut prefix)
            .map_err(|_| End::Closed)?;
        let len = frame_length(prefix, self.max_frame)
            .map_err(|e| End::Error(e.status(), e.to_string()))?;
        let mut body = vec![0u8; len];
        self.reader.read_exact(&mut body).map_err(|_| End::Closed)?;
        match decode_frame(&body) {
            Ok(f) => Ok(Some(f)),
            Err(SpopError::UnknownFrameType(_)) | Err(SpopError::Aborted { .. }) => Ok(None),
            Err(e) => Err(End::Error(e.status(), e.to_string())),
        }
    }

    fn run(mut self, pool: &VmPool) {
        let end = self.handshake().and_then(|healthcheck| {
            if healthcheck {
                Err(End::Closed)
            } else {
                self.serve(pool)
            }
        });
        if let End::Error(status, message) = end.err().unwrap_or(End::Closed) {
            agent_line(
                LogLevel::Warn,
                &format!("closing an SPOP connection: {message}"),
            );
            let _ = write_frame(&self.writer, &disconnect(status, &message), self.max_frame);
        }
        let _ = self.reader.shutdown(std::net::Shutdown::Both);
    }

    /// Returns whether it was a health check (answered, then closed).
    fn handshake(&mut self) -> Result<bool, End> {
        let Some(Frame::HaproxyHello { kv }) = self.read_frame()? else {
            return Err(End::Error(
                SpopStatus::InvalidFrame,
                "expected HAPROXY-HELLO".into(),
            ));
        };
        let hello = HaproxyHello::from_kv(&kv)
            .map_err(|e: SpopError| End::Error(e.status(), e.to_string()))?;
        self.max_frame = hello.max_frame_size.min(self.settings.max_frame_size);
        // Pipelining only: "async" buys nothing when ACKs go back on the same connection, and
        // fragmentation is refused (HAProxy 2.6 is told `no option send-frag-payload`).
        let caps: &[&str] = if hello.has_capability("pipelining") {
            &["pipelining"]
        } else {
            &[]
        };
        write_frame(
            &self.writer,
            &agent_hello(self.max_frame, caps),
            self.max_frame,
        )
        .map_err(|_| End::Closed)?;
        Ok(hello.healthcheck)
    }

    fn serve(&mut self, pool: &VmPool) -> Result<(), End> {
        loop {
            let Some(frame) = self.read_frame()? else {
                continue;
            };
            match frame {
                Frame::Notify {
                    stream_id,
                    frame_id,
                    messages,
                } => {
                    let max = self.max_frame;
                    let writer = self.writer.clone();
                    let send = move |vars: Vec<Var>| {
                        let bytes = ack_frame(stream_id, frame_id, vars, max);
                        let mut w = writer.lock().unwrap_or_else(|e| e.into_inner());
                        // A closed connection: HAProxy gave up on the request and refused it.
                        let _ = w.write_all(&bytes);
                    };
                    let message = messages.iter().find(|m| m.name == plan::MESSAGE.as_bytes());
                    match message.map(request::from_message) {
                        Some(Ok(request)) => pool.submit(Job {
                            request,
                            reply: Box::new(send),
                        }),
                        Some(Err(r)) => send(verdict::refused(&r)),
                        None => send(verdict::refused(&verdict::Refusal::BadMessage(format!(
                            "no `{}` message in the NOTIFY",
                            plan::MESSAGE
                        )))),
                    }
                }
                Frame::HaproxyDisconnect { .. } => {
                    let _ = write_frame(
                        &self.writer,
                        &disconnect(SpopStatus::Normal, "bye"),
                        self.max_frame,
                    );
                    return Err(End::Closed);
                }
                _ => {
                    return Err(End::Error(
                        SpopStatus::InvalidFrame,
                        "unexpected frame after the handshake".into(),
                    ))
                }
            }
        }
    }
}
