//! GDAL loaded on first use. Linking libgdal eagerly costs every process ~35-45 ms before
//! `main` (the loader maps and relocates libgdal and its ~110 libraries: PROJ, GEOS, curl,
//! Poppler, HDF, NetCDF...; measured with `LD_DEBUG=statistics` and a C program that only
//! links `-lgdal`), also for `info` and index reads that never call it.
//!
//! build.rs generates, on x86-64 Linux, a hidden trampoline for each C function libgdal
//! exports; the link resolves the `gdal`/`gdal-sys` crates' calls to them, so libgdal drops
//! out of the load list. The first call of each function lands in
//! [`chunkcube_gdal_resolve`], which dlopens libgdal once (`RTLD_LOCAL`: its symbols never
//! interpose on another GDAL in the same process, e.g. rasterio's under Python), looks the
//! function up and patches its slot, so later calls are one indirect jump. Elsewhere (or with
//! `CHUNKCUBE_GDAL_EAGER=1` at build time) GDAL is linked as usual.

#[cfg(chunkcube_gdal_lazy)]
mod imp {
    use std::ffi::{c_void, CStr, CString};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::OnceLock;

    include!(concat!(env!("OUT_DIR"), "/gdal_lazy.rs"));

    #[allow(non_upper_case_globals)]
    extern "C" {
        /// One address per trampoline (defined in the generated assembly).
        static chunkcube_gdal_slots: [AtomicUsize; 0];
    }

    /// libgdal's handle (a usize so it can be shared); exits with one error line when GDAL
    /// cannot be loaded, since the GDAL call that needed it has no way to fail.
    fn library() -> usize {
        static LIB: OnceLock<usize> = OnceLock::new();
        *LIB.get_or_init(|| {
            let name = CString::new(SONAME).expect("SONAME has no NUL");
            // RTLD_LAZY, as the loader binds a linked library: libgdal's own calls into its
            // hundred-odd dependencies are bound on first use. RTLD_NOW bound them all up
            // front: dlopen took 43-53 ms instead of 38-44 ms (a C loop on this machine),
            // ld.so twice the bound's share of a small ingest's profile.
            // SAFETY: a plain dlopen of a NUL-terminated name.
            let h = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_LAZY | libc::RTLD_LOCAL) };
            if h.is_null() {
                fail(&format!("cannot load GDAL ({SONAME}): {}", dl_error()));
            }
            h as usize
        })
    }

    fn dl_error() -> String {
        // SAFETY: dlerror returns NULL or a NUL-terminated string.
        let e = unsafe { libc::dlerror() };
        if e.is_null() {
            "unknown error".into()
        } else {
            // SAFETY: checked non-null above.
            unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
        }
    }

    fn fail(msg: &str) -> ! {
        eprintln!("error: {msg}");
        std::process::exit(1)
    }

    /// The address of GDAL function `slot`, stored in its slot for the next calls. Called
    /// only from the generated trampolines' resolver, with the arguments of the original call
    /// saved around it.
    #[no_mangle]
    extern "C" fn chunkcube_gdal_resolve(slot: usize) -> *const c_void {
        let Some(name) = NAMES.get(slot) else {
            fail(&format!("GDAL trampoline {slot} out of range"));
        };
        let c = CString::new(*name).expect("symbol names have no NUL");
        // SAFETY: a valid handle from dlopen and a NUL-terminated name.
        let f = unsafe { libc::dlsym(library() as *mut c_void, c.as_ptr()) };
        if f.is_null() {
            fail(&format!(
                "GDAL ({SONAME}) has no function {name}: {}",
                dl_error()
            ));
        }
        // SAFETY: `slot` < NAMES.len(), the number of slots the assembly defines; concurrent
        // resolutions of one slot store the same address.
        unsafe {
            let slots = std::ptr::addr_of!(chunkcube_gdal_slots) as *const AtomicUsize;
            (*slots.add(slot)).store(f as usize, Ordering::Release);
        }
        f
    }

    /// Whether libgdal is in this process (loaded by a first call, or linked eagerly).
    pub(super) fn loaded() -> bool {
        let name = CString::new(SONAME).expect("SONAME has no NUL");
        // SAFETY: RTLD_NOLOAD only looks the library up.
        let h = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
        if h.is_null() {
            return false;
        }
        // SAFETY: balances the reference RTLD_NOLOAD took.
        unsafe { libc::dlclose(h) };
        true
    }
}

#[cfg(not(chunkcube_gdal_lazy))]
mod imp {
    /// GDAL is linked eagerly on this platform: always loaded.
    pub(super) fn loaded() -> bool {
        true
    }
}

/// Whether GDAL has been loaded into this process (always true where it is linked eagerly).
/// For tests and diagnostics: commands that need no GDAL should never load it.
pub fn gdal_loaded() -> bool {
    imp::loaded()
}

/// Whether this build loads GDAL lazily (see the module docs).
pub const LAZY: bool = cfg!(chunkcube_gdal_lazy);
