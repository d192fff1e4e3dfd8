//! Process resource limits: every client connection holds a file descriptor.

/// Raises the soft limit on open files (`RLIMIT_NOFILE`) to the hard limit and returns the new
/// soft limit.
///
/// On macOS the limit is also capped at `kern.maxfilesperproc`. On platforms without
/// `RLIMIT_NOFILE` nothing changes and the result is `u64::MAX`.
pub fn raise_nofile_limit() -> std::io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raises_to_the_hard_limit() {
        let raised = raise_nofile_limit().unwrap();
        assert!(raised >= 1);
        #[cfg(unix)]
        {
            let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
            assert_eq!(soft, raised);
            #[cfg(target_os = "linux")]
            assert_eq!(soft, hard);
            let _ = hard;
        }
        // Raising again changes nothing.
        assert_eq!(raise_nofile_limit().unwrap(), raised);
    }
}
