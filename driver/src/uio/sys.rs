//! The one system call of the uio platform that std does not wrap within zcnic's MSRV:
//! `flock`, the advisory lock that keeps two zcnic processes off one device.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Takes an exclusive advisory lock on `file` without waiting: `Ok(false)` when another
/// open file (in this or another process) holds it. The lock goes with the file's last
/// descriptor, also when the process dies.
pub fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    // SAFETY: flock takes only a descriptor, which `file` keeps open for the call; it
    // touches no memory of ours.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_open_file_cannot_take_the_lock() {
        let path = std::env::temp_dir().join(format!("zcnic-lock-{}", std::process::id()));
        let a = File::create(&path).unwrap();
        let b = File::open(&path).unwrap();
        assert!(try_lock_exclusive(&a).unwrap());
        assert!(!try_lock_exclusive(&b).unwrap(), "held by the first file");
        drop(a);
        assert!(
            try_lock_exclusive(&b).unwrap(),
            "released with the first file"
        );
        let _ = std::fs::remove_file(path);
    }
}
