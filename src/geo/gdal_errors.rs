//! GDAL reports some decoding failures only to its error handler while the read call itself
//! succeeds. We install one process-wide handler that records messages per thread, so each
//! worker can check its own reads.

use gdal::errors::CplErrType;
use std::cell::RefCell;
use std::sync::Once;

thread_local! {
    static ERRORS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

static INSTALL: Once = Once::new();

/// Install the capturing GDAL error handler (idempotent) and clear this thread's record.
pub fn capture_gdal_errors() {
    INSTALL.call_once(|| {
        gdal::config::set_error_handler(|class, _code, msg| {
            if matches!(class, CplErrType::Failure | CplErrType::Fatal) {
                ERRORS.with(|e| e.borrow_mut().push(msg.to_string()));
            }
        });
    });
    ERRORS.with(|e| e.borrow_mut().clear());
}

/// Take the error messages GDAL reported on this thread since the last call.
pub fn take_gdal_errors() -> Vec<String> {
    ERRORS.with(|e| std::mem::take(&mut *e.borrow_mut()))
}
