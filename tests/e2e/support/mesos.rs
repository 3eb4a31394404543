//! A `km mesos-master` process for tests, and a RecordIO stream reader.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use km_mesos::recordio;

use super::process::Proc;
use super::{free_port, km_bin};

/// A running `km mesos-master` on a free loopback port.
pub struct MesosMaster {
    pub proc: Proc,
    pub port: u16,
    args: Vec<String>,
    dir: tempfile::TempDir,
}

impl MesosMaster {
    /// Starts the master with extra flags and waits until `/health` answers.
    pub fn start(extra: &[&str]) -> MesosMaster {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let args: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        let proc = Self::spawn(port, &args, dir.path());
        let master = MesosMaster { proc, port, args, dir };
        master.wait_healthy(Duration::from_secs(20));
        master
    }

    fn spawn(port: u16, args: &[String], dir: &std::path::Path) -> Proc {
        let mut cmd = Command::new(km_bin());
        cmd.arg("mesos-master").arg("--ip=127.0.0.1").arg(format!("--port={port}")).args(args);
        cmd.env("KM_LOG", "info,km_mesos_master=debug");
        Proc::spawn("km mesos-master", cmd, &dir.join("master.log"))
    }

    /// A directory owned by this master's test (e.g. for `--work_dir`).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// kill -9, then start again with the same port and flags.
    pub fn restart(&mut self) {
        self.proc.kill();
        self.proc = Self::spawn(self.port, &self.args, self.dir.path());
        self.wait_healthy(Duration::from_secs(20));
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn wait_healthy(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.write_all(b"GET /health HTTP/1.0\r\nHost: x\r\n\r\n");
                let mut buf = [0u8; 12];
                if s.read_exact(&mut buf).is_ok()
                    && (&buf == b"HTTP/1.0 200" || &buf == b"HTTP/1.1 200")
                {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("km mesos-master did not become healthy; log:\n{}", self.proc.log());
    }
}

/// Reads whole RecordIO records from a streaming response.
pub struct Records {
    body: futures::stream::BoxStream<'static, reqwest::Result<Bytes>>,
    decoder: recordio::Decoder,
}

impl Records {
    pub fn new(resp: reqwest::Response) -> Records {
        Records { body: resp.bytes_stream().boxed(), decoder: recordio::Decoder::default() }
    }

    /// The next record within `timeout`; `None` at end of stream.
    pub async fn next(&mut self, timeout: Duration) -> Option<Bytes> {
        let fut = async {
            loop {
                if let Some(r) = self.decoder.next_record().expect("valid RecordIO") {
                    return Some(r);
                }
                match self.body.next().await {
                    Some(Ok(chunk)) => self.decoder.push(&chunk),
                    Some(Err(e)) => panic!("stream broke: {e}"),
                    None => {
                        self.decoder.finish().expect("stream ended on a record boundary");
                        return None;
                    }
                }
            }
        };
        tokio::time::timeout(timeout, fut).await.expect("no record within the timeout")
    }

    /// Whether the stream ends within `timeout` (records before the end are skipped).
    pub async fn ends_within(&mut self, timeout: Duration) -> bool {
        let fut = async {
            loop {
                match self.decoder.next_record() {
                    Ok(Some(_)) => continue,
                    Ok(None) => {}
                    Err(_) => return,
                }
                match self.body.next().await {
                    Some(Ok(chunk)) => self.decoder.push(&chunk),
                    Some(Err(_)) | None => return,
                }
            }
        };
        tokio::time::timeout(timeout, fut).await.is_ok()
    }
}
