//! Lazy GDAL (see src/geo/gdal_lazy.rs): on x86-64 Linux, generate one trampoline per C
//! function libgdal exports, so every binary and library linking chunkcube resolves GDAL's
//! functions to these and the linker (`--as-needed`) drops libgdal from the load list: GDAL and
//! its ~110 libraries are then dlopen'ed on the first GDAL call, not at every start-up.
//!
//! Anything missing (another platform, no `nm`, no libgdal found) falls back to the ordinary
//! eager link, which works the same, only slower to start.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Prefixes of GDAL's C API (gdal.h, ogr_api.h, ogr_srs_api.h, cpl_*.h): libgdal also exports
/// symbols of libraries it embeds (json-c, sqlite helpers) that must not be shadowed.
const PREFIXES: [&str; 8] = ["GDAL", "OGR", "OSR", "OCT", "CPL", "VSI", "CSL", "GNM"];

fn main() {
    println!("cargo::rustc-check-cfg=cfg(chunkcube_gdal_lazy)");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=GDAL_LIB_DIR");
    println!("cargo:rerun-if-env-changed=CHUNKCUBE_GDAL_EAGER");
    let target_ok = env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("x86_64")
        && env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu");
    if !target_ok || env::var_os("CHUNKCUBE_GDAL_EAGER").is_some() {
        return;
    }
    let Some(lib) = find_libgdal() else {
        println!("cargo:warning=libgdal.so not found: GDAL is linked eagerly");
        return;
    };
    let Some((soname, names)) = exports(&lib) else {
        println!(
            "cargo:warning=cannot list {}'s symbols (nm, readelf): GDAL is linked eagerly",
            lib.display()
        );
        return;
    };
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("gdal_lazy.rs");
    std::fs::write(&out, generate(&soname, &names)).expect("write gdal_lazy.rs");
    println!("cargo:rerun-if-changed={}", lib.display());
    println!("cargo:rustc-cfg=chunkcube_gdal_lazy");
}

/// The libgdal.so the link will use: $GDAL_LIB_DIR, pkg-config's libdir, or the usual places.
fn find_libgdal() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = env::var_os("GDAL_LIB_DIR")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    if let Ok(o) = Command::new("pkg-config")
        .args(["--variable=libdir", "gdal"])
        .output()
    {
        if o.status.success() {
            dirs.push(PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
        }
    }
    dirs.extend(
        [
            "/usr/lib/x86_64-linux-gnu",
            "/usr/lib64",
            "/usr/lib",
            "/usr/local/lib",
        ]
        .map(PathBuf::from),
    );
    dirs.into_iter()
        .map(|d| d.join("libgdal.so"))
        .find(|p| p.exists())
}

/// The library's SONAME and the C functions it exports under GDAL's prefixes.
fn exports(lib: &Path) -> Option<(String, Vec<String>)> {
    let dynamic = Command::new("readelf").arg("-d").arg(lib).output().ok()?;
    let text = String::from_utf8_lossy(&dynamic.stdout);
    let soname = text
        .lines()
        .find(|l| l.contains("(SONAME)"))
        .and_then(|l| Some(l.split('[').nth(1)?.trim_end_matches(']').to_string()))?;
    let nm = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(lib)
        .output()
        .ok()?;
    if !nm.status.success() {
        return None;
    }
    let mut names: Vec<String> = String::from_utf8_lossy(&nm.stdout)
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (_, kind, name) = (w.next()?, w.next()?, w.next()?);
            let name = name.split('@').next()?;
            let c_name = name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            (kind == "T" && c_name && PREFIXES.iter().any(|p| name.starts_with(p)))
                .then(|| name.to_string())
        })
        .collect();
    names.sort();
    names.dedup();
    (!names.is_empty()).then_some((soname, names))
}

/// Rust source: the SONAME, the names, and (global_asm, AT&T) per function `i` a hidden
/// trampoline `jmp *slots[i]`, whose slot starts at a stub that pushes `i` and enters the
/// shared resolver; the resolver saves the argument registers, asks
/// `chunkcube_gdal_resolve(i)` for the real address (which also stores it in the slot) and
/// jumps there with the caller's arguments and return address intact.
fn generate(soname: &str, names: &[String]) -> String {
    let mut s = String::new();
    writeln!(s, "/// The library loaded on the first GDAL call.").unwrap();
    writeln!(s, "pub(super) const SONAME: &str = {soname:?};").unwrap();
    writeln!(s, "/// The functions with a trampoline, by slot.").unwrap();
    writeln!(s, "pub(super) static NAMES: [&str; {}] = [", names.len()).unwrap();
    for n in names {
        writeln!(s, "    {n:?},").unwrap();
    }
    writeln!(s, "];").unwrap();
    let mut a = String::new();
    a.push_str(".pushsection .text.chunkcube_gdal_lazy,\"ax\",@progbits\n");
    for (i, n) in names.iter().enumerate() {
        write!(
            a,
            ".p2align 3\n.globl {n}\n.hidden {n}\n.type {n},@function\n{n}:\n    jmp *(chunkcube_gdal_slots+{o})(%rip)\n.size {n},.-{n}\n\
             chunkcube_gdal_stub_{i}:\n    pushq ${i}\n    jmp chunkcube_gdal_enter\n",
            o = 8 * i
        )
        .unwrap();
    }
    a.push_str(
        ".p2align 4\nchunkcube_gdal_enter:\n\
         # rsp+0: slot index, rsp+8: the caller's return address (rsp is 16-aligned here)\n\
         pushq %rdi\npushq %rsi\npushq %rdx\npushq %rcx\npushq %r8\npushq %r9\npushq %rax\n\
         subq $136, %rsp\n\
         movdqu %xmm0, 0(%rsp)\nmovdqu %xmm1, 16(%rsp)\nmovdqu %xmm2, 32(%rsp)\nmovdqu %xmm3, 48(%rsp)\n\
         movdqu %xmm4, 64(%rsp)\nmovdqu %xmm5, 80(%rsp)\nmovdqu %xmm6, 96(%rsp)\nmovdqu %xmm7, 112(%rsp)\n\
         movq 192(%rsp), %rdi\n\
         call chunkcube_gdal_resolve@PLT\n\
         movq %rax, %r11\n\
         movdqu 0(%rsp), %xmm0\nmovdqu 16(%rsp), %xmm1\nmovdqu 32(%rsp), %xmm2\nmovdqu 48(%rsp), %xmm3\n\
         movdqu 64(%rsp), %xmm4\nmovdqu 80(%rsp), %xmm5\nmovdqu 96(%rsp), %xmm6\nmovdqu 112(%rsp), %xmm7\n\
         addq $136, %rsp\n\
         popq %rax\npopq %r9\npopq %r8\npopq %rcx\npopq %rdx\npopq %rsi\npopq %rdi\n\
         addq $8, %rsp\n\
         jmp *%r11\n\
         .popsection\n",
    );
    a.push_str(".pushsection .data.chunkcube_gdal_lazy,\"aw\",@progbits\n.p2align 3\n.globl chunkcube_gdal_slots\n.hidden chunkcube_gdal_slots\nchunkcube_gdal_slots:\n");
    for i in 0..names.len() {
        writeln!(a, "    .quad chunkcube_gdal_stub_{i}").unwrap();
    }
    a.push_str(".popsection\n");
    writeln!(
        s,
        "core::arch::global_asm!(r#\"\n{a}\"#, options(att_syntax));"
    )
    .unwrap();
    s
}
