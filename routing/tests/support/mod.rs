//! A throwaway redis-server for the routing tests that compare against real Redis.
//!
//! [`RedisServer::start`] runs `redis-server` on a free port in a temporary directory and kills
//! it on drop. If `redis-server` is not installed the test fails with a message saying so: it
//! never passes without having compared anything.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::Duration;

use bytes::BytesMut;
use protocol::{Frame, Limits, Request};

/// A running redis-server, killed on drop.
pub struct RedisServer {
    child: Child,
    dir: PathBuf,
    pub port: u16,
}

impl RedisServer {
    /// Starts `redis-server` with `extra` arguments (such as `--cluster-enabled yes`).
    ///
    /// # Panics
    /// If `redis-server` cannot be run or does not accept connections within five seconds.
    pub fn start(extra: &[&str]) -> RedisServer {
        // Tests run in parallel: another test's server may take the port picked here before
        // this one binds it. Then this one exits, and the port answers with the other's pid.
        for _ in 0..5 {
            if let Some(server) = RedisServer::try_start(extra) {
                return server;
            }
        }
        panic!("redis-server did not start on a free port in five attempts");
    }

    /// Starts a server on a free port; `None` if the port turned out to be another's.
    fn try_start(extra: &[&str]) -> Option<RedisServer> {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("slotway-routing-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "this test needs `redis-server` (Redis 7) on PATH, and running it failed: {e}. \
                     Install Redis 7 to run it."
                )
            });
        let server = RedisServer { child, dir, port };
        for _ in 0..100 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                let info = server.connect().call(&["INFO", "server"]);
                let ours = format!("process_id:{}\r\n", server.child.id());
                let Frame::Bulk(text) = info else {
                    return None;
                };
                return text
                    .windows(ours.len())
                    .any(|w| w == ours.as_bytes())
                    .then_some(server);
            }
            sleep(Duration::from_millis(50));
        }
        panic!("redis-server did not accept connections on port {port}");
    }

    /// A new connection.
    pub fn connect(&self) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to redis-server");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("set timeout");
        Client {
            stream,
            buf: BytesMut::new(),
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A blocking RESP client, enough for tests.
pub struct Client {
    stream: TcpStream,
    buf: BytesMut,
}

impl Client {
    /// Sends one command and reads its reply.
    pub fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Frame {
        self.send(args);
        self.read()
    }

    /// Sends one command without reading the reply (for pipelining).
    pub fn send<A: AsRef<[u8]>>(&mut self, args: &[A]) {
        let request = Request::from_args(args);
        self.stream
            .write_all(request.raw())
            .expect("write to redis-server");
    }

    /// Reads one reply.
    pub fn read(&mut self) -> Frame {
        loop {
            if let Some(frame) =
                protocol::decode(&mut self.buf, &Limits::default()).expect("valid RESP")
            {
                return frame;
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self
                .stream
                .read(&mut chunk)
                .expect("read from redis-server");
            assert!(n > 0, "redis-server closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// A small deterministic PRNG (xorshift64*), so failures can be reproduced.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
