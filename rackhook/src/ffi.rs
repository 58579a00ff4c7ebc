//! The C ABI, declared in `include/rackhook.h`: integer results (-1 on failure) and a
//! thread-local message for the last failure, as C libraries expect. No panic crosses into C:
//! each entry point runs inside `catch_unwind` and reports a panic as an internal error.

use std::any::Any;
use std::cell::RefCell;
use std::ffi::{c_char, c_int, CStr, CString};
use std::net::IpAddr;
use std::os::fd::IntoRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use crate::{check_blob_len, Error};

thread_local! {
    /// The message of this thread's last failed call; empty after a successful one.
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: String) {
    // C strings end at the first NUL: keep the rest of the message readable.
    let message = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    // Fails only while the thread is being torn down, when nobody can read the message.
    let _ = LAST_ERROR.try_with(|last| *last.borrow_mut() = message);
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

/// Runs the body of C entry point `function`: records its error (prefixed with the function's
/// name) or clears the last one, and turns a panic into an error instead of unwinding into C.
fn guarded(function: &str, body: impl FnOnce() -> Result<c_int, Error>) -> c_int {
    let outcome = catch_unwind(AssertUnwindSafe(body))
        .unwrap_or_else(|panic| Err(Error::Internal(panic_message(&*panic))));
    match outcome {
        Ok(result) => {
            set_last_error(String::new());
            result
        }
        Err(e) => {
            set_last_error(format!("{function}: {e}"));
            -1
        }
    }
}

/// Captures the connection of socket `fd` in process `pid` into a blob the library allocates:
/// `*blob` and `*len` receive it (free it with [`rackhook_free`]). Returns 0, or -1 with
/// `*blob` = NULL, `*len` = 0 and the reason in [`rackhook_last_error`].
///
/// # Safety
/// `blob` and `len` are NULL or point to writable storage for a pointer and a `size_t`.
#[no_mangle]
pub unsafe extern "C" fn rackhook_checkpoint(
    pid: c_int,
    fd: c_int,
    blob: *mut *mut u8,
    len: *mut usize,
) -> c_int {
    guarded("rackhook_checkpoint", || {
        if blob.is_null() {
            return Err(Error::NullArgument("blob"));
        }
        if len.is_null() {
            return Err(Error::NullArgument("len"));
        }
        // SAFETY: both are non-null and, by this function's contract, writable.
        unsafe {
            blob.write(ptr::null_mut());
            len.write(0);
        }
        let pid = u32::try_from(pid)
            .ok()
            .filter(|&pid| pid > 0)
            .ok_or(Error::InvalidPid(pid.into()))?;
        let bytes = crate::checkpoint(pid, fd)?.into_boxed_slice();
        let bytes_len = bytes.len();
        // rackhook_free rebuilds the box from this pointer and the length.
        let bytes = Box::into_raw(bytes).cast::<u8>();
        // SAFETY: as above.
        unsafe {
            blob.write(bytes);
            len.write(bytes_len);
        }
        Ok(0)
    })
}

/// Frees a blob from [`rackhook_checkpoint`]; NULL is ignored.
///
/// # Safety
/// `blob` is NULL or a blob from `rackhook_checkpoint` with its `len`, not freed before.
#[no_mangle]
pub unsafe extern "C" fn rackhook_free(blob: *mut u8, len: usize) {
    if blob.is_null() {
        return;
    }
    // SAFETY: by this function's contract, `blob` and `len` are the pointer and length of a
    // `Box<[u8]>` that rackhook_checkpoint leaked, and nothing else owns it.
    drop(unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(blob, len)) });
}

/// Restores a blob into a new connected socket and returns its descriptor (close-on-exec), or
/// -1 with the reason in [`rackhook_last_error`]. `local` is an address of this host to bind
/// to (text, IPv4 or IPv6), or NULL for the kernel's choice towards the peer.
///
/// # Safety
/// `blob` is NULL or points to `len` readable bytes; `local` is NULL or a NUL-terminated
/// string.
#[no_mangle]
pub unsafe extern "C" fn rackhook_restore(
    blob: *const u8,
    len: usize,
    local: *const c_char,
) -> c_int {
    guarded("rackhook_restore", || {
        if blob.is_null() {
            return Err(Error::NullArgument("blob"));
        }
        // Before the slice is made: its length must be one rackd could accept.
        check_blob_len(len)?;
        let local = if local.is_null() {
            None
        } else {
            // SAFETY: non-null and, by this function's contract, NUL-terminated.
            let text = unsafe { CStr::from_ptr(local) }.to_string_lossy();
            let addr = text.parse::<IpAddr>();
            Some(addr.map_err(|_| Error::InvalidLocal(text.into_owned()))?)
        };
        // SAFETY: non-null, `len` readable bytes by this function's contract; `len` is at most
        // MAX_ATTACHMENT, far below isize::MAX.
        let bytes = unsafe { std::slice::from_raw_parts(blob, len) };
        let socket = crate::restore(bytes, local)?;
        Ok(socket.into_raw_fd())
    })
}

/// The message of this thread's last failed rackhook call ("" after a successful one). Never
/// NULL; valid until the next rackhook call on this thread.
#[no_mangle]
pub extern "C" fn rackhook_last_error() -> *const c_char {
    LAST_ERROR
        .try_with(|last| last.borrow().as_ptr())
        .unwrap_or(c"".as_ptr())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last_error() -> String {
        // SAFETY: rackhook_last_error returns a valid NUL-terminated string.
        unsafe { CStr::from_ptr(rackhook_last_error()) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn null_arguments_fail_with_their_name() {
        let mut len = 0usize;
        let mut blob = ptr::null_mut();
        // SAFETY: NULL is allowed for every pointer argument; `len` is writable.
        let rc = unsafe { rackhook_checkpoint(1, 3, ptr::null_mut(), &mut len) };
        assert_eq!(rc, -1);
        assert_eq!(last_error(), "rackhook_checkpoint: blob is NULL");
        // SAFETY: as above.
        let rc = unsafe { rackhook_checkpoint(1, 3, &mut blob, ptr::null_mut()) };
        assert_eq!(rc, -1);
        assert_eq!(last_error(), "rackhook_checkpoint: len is NULL");
        // SAFETY: as above.
        let rc = unsafe { rackhook_restore(ptr::null(), 10, ptr::null()) };
        assert_eq!(rc, -1);
        assert_eq!(last_error(), "rackhook_restore: blob is NULL");
    }

    #[test]
    fn bad_values_fail_with_the_value_and_clear_the_outputs() {
        let mut blob = ptr::dangling_mut::<u8>();
        let mut len = 99usize;
        // SAFETY: both outputs are writable.
        let rc = unsafe { rackhook_checkpoint(-5, 3, &mut blob, &mut len) };
        assert_eq!(rc, -1);
        assert!(blob.is_null() && len == 0, "outputs not cleared");
        assert_eq!(
            last_error(),
            "rackhook_checkpoint: invalid pid -5: a process id is a positive number"
        );
        let bytes = b"RKCP";
        // SAFETY: `bytes` has 4 readable bytes; the address is NUL-terminated.
        let rc = unsafe { rackhook_restore(bytes.as_ptr(), 4, c"203.0.113.300".as_ptr()) };
        assert_eq!(rc, -1);
        assert_eq!(
            last_error(),
            "rackhook_restore: invalid local address \"203.0.113.300\": expected an IPv4 or \
             IPv6 address such as 203.0.113.2"
        );
        // SAFETY: a zero-length blob is never read.
        let rc = unsafe { rackhook_restore(bytes.as_ptr(), 0, ptr::null()) };
        assert_eq!(rc, -1);
        assert!(
            last_error().contains("the blob is empty"),
            "{}",
            last_error()
        );
    }

    #[test]
    fn panics_become_errors_and_success_clears_the_message() {
        let rc = guarded("rackhook_test", || panic!("boom {}", 7));
        assert_eq!(rc, -1);
        assert_eq!(
            last_error(),
            "rackhook_test: internal error in rackhook (please report): boom 7"
        );
        assert_eq!(guarded("rackhook_test", || Ok(5)), 5);
        assert_eq!(last_error(), "");
    }

    #[test]
    fn the_message_belongs_to_the_thread_that_failed() {
        // SAFETY: NULL blob is allowed.
        let rc = unsafe { rackhook_restore(ptr::null(), 1, ptr::null()) };
        assert_eq!(rc, -1);
        let other = std::thread::spawn(last_error).join().unwrap();
        assert_eq!(other, "");
        assert_eq!(last_error(), "rackhook_restore: blob is NULL");
    }

    #[test]
    fn messages_with_nul_bytes_stay_whole() {
        set_last_error("a\0b".into());
        assert_eq!(last_error(), "a\\0b");
    }

    #[test]
    fn free_ignores_null_and_takes_back_a_blob() {
        // SAFETY: NULL is ignored.
        unsafe { rackhook_free(ptr::null_mut(), 5) };
        let blob = Box::into_raw(vec![1u8, 2, 3].into_boxed_slice()).cast::<u8>();
        // SAFETY: made the way rackhook_checkpoint makes blobs, freed once.
        unsafe { rackhook_free(blob, 3) };
    }
}
