//! QEMU's machine protocol (QMP) while a guest runs, for a test that acts on the machine
//! from the host in step with what the guest prints ([`run_watched`](crate::run_watched)):
//! `set_link` takes a NIC's wire down and up as a pulled cable would.
//!
//! The socket is QEMU's `-qmp unix:PATH,server=on,wait=off`, opened on the first command.
//! Every read has a timeout; events QEMU sends between replies (`NIC_RX_FILTER_CHANGED`
//! when a guest driver changes its receive filter, …) are skipped.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::Error;

/// How long a command may wait for its reply, or the socket to appear.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// The QMP connection of one running guest.
#[derive(Debug)]
pub struct Monitor {
    path: PathBuf,
    conn: Option<Conn>,
    timeout: Duration,
}

#[derive(Debug)]
struct Conn {
    w: UnixStream,
    r: BufReader<UnixStream>,
}

/// The netdev id the harness gives NIC `i` of [`GuestSpec::nics`](crate::GuestSpec::nics):
/// the name `set_link` takes (QEMU passes the change on to the NIC plugged into it).
pub fn netdev_id(i: usize) -> String {
    format!("n{i}")
}

impl Monitor {
    pub(crate) fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            conn: None,
            timeout: REPLY_TIMEOUT,
        }
    }

    /// Runs one QMP command, `{"execute": NAME, "arguments": ARGS}` with `arguments` a JSON
    /// object (or empty for none); returns QEMU's reply line, `{"return": …}`.
    pub fn execute(&mut self, name: &str, arguments: &str) -> Result<String, Error> {
        let command = if arguments.is_empty() {
            format!("{{\"execute\":\"{name}\"}}")
        } else {
            format!("{{\"execute\":\"{name}\",\"arguments\":{arguments}}}")
        };
        let timeout = self.timeout;
        let conn = self.connect()?;
        conn.w
            .write_all(format!("{command}\n").as_bytes())
            .map_err(Error::io(format!("QMP: sending {command}")))?;
        let reply = read_reply(&mut conn.r, &command, timeout)?;
        if reply.contains("\"error\"") {
            return Err(failed(&command, "QEMU refused it", &reply));
        }
        Ok(reply)
    }

    /// `set_link NETDEV on|off`: the NIC on netdev `netdev` ([`netdev_id`]) sees its link
    /// go down or come back (an e1000 restarts auto-negotiation first, about 500 ms).
    pub fn set_link(&mut self, netdev: &str, up: bool) -> Result<(), Error> {
        let args = format!("{{\"name\":\"{netdev}\",\"up\":{up}}}");
        self.execute("set_link", &args).map(drop)
    }

    /// The connection, opened (greeting read, capabilities negotiated) on first use. QEMU
    /// creates the socket as it starts, before the guest prints anything.
    fn connect(&mut self) -> Result<&mut Conn, Error> {
        if self.conn.is_none() {
            let end = Instant::now() + self.timeout;
            let stream = loop {
                match UnixStream::connect(&self.path) {
                    Ok(s) => break s,
                    Err(e) if Instant::now() >= end => {
                        let what = format!("QMP: connecting to {}", self.path.display());
                        return Err(Error::io(what)(e));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            };
            stream
                .set_read_timeout(Some(self.timeout))
                .map_err(Error::io("QMP: setting a read timeout"))?;
            let r = BufReader::new(
                stream
                    .try_clone()
                    .map_err(Error::io("QMP: cloning the socket"))?,
            );
            let mut conn = Conn { w: stream, r };
            let mut greeting = String::new();
            conn.r
                .read_line(&mut greeting)
                .map_err(Error::io("QMP: reading QEMU's greeting"))?;
            if !greeting.contains("\"QMP\"") {
                return Err(failed("(connect)", "no QMP greeting", &greeting));
            }
            conn.w
                .write_all(b"{\"execute\":\"qmp_capabilities\"}\n")
                .map_err(Error::io("QMP: negotiating capabilities"))?;
            read_reply(&mut conn.r, "qmp_capabilities", self.timeout)?;
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("connected just above"))
    }
}

/// The next reply line (`return` or `error`), skipping events; within `timeout`.
fn read_reply(r: &mut impl BufRead, command: &str, timeout: Duration) -> Result<String, Error> {
    let end = Instant::now() + timeout;
    loop {
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(0) => return Err(failed(command, "QEMU closed the socket", "")),
            Ok(_) if line.contains("\"return\"") || line.contains("\"error\"") => {
                return Ok(line.trim().to_string())
            }
            Ok(_) if Instant::now() < end => {} // an event
            Ok(_) => return Err(failed(command, "no reply, only events", &line)),
            Err(e) => {
                return Err(Error::io(format!(
                    "QMP: waiting for the reply to {command}"
                ))(e))
            }
        }
    }
}

fn failed(command: &str, status: &str, output: &str) -> Error {
    Error::Command {
        command: format!("QMP {command}"),
        status: status.into(),
        hint: String::new(),
        output: output.trim().into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_skip_events_and_errors_are_errors() {
        let text = "{\"event\":\"NIC_RX_FILTER_CHANGED\"}\n{\"return\": {}}\n";
        let got = read_reply(&mut text.as_bytes(), "x", REPLY_TIMEOUT).unwrap();
        assert_eq!(got, "{\"return\": {}}");
        let closed = read_reply(&mut "".as_bytes(), "x", REPLY_TIMEOUT).unwrap_err();
        assert!(closed.to_string().contains("closed"), "{closed}");
        assert_eq!(netdev_id(3), "n3");
    }

    #[test]
    fn a_qemu_that_never_listens_is_an_error_not_a_hang() {
        let path = std::env::temp_dir().join(format!("zcnic-qmp-none-{}", std::process::id()));
        let mut m = Monitor::new(&path);
        m.timeout = Duration::from_millis(100);
        let t = Instant::now();
        assert!(m.set_link("n0", false).is_err());
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}
