//! The tar dialect ship writes: POSIX ustar headers with normalised metadata, and a
//! PAX `x` header carrying `path`/`linkpath` only when a name does not fit ustar.
//!
//! Headers are written here rather than through `tar::Builder` so that nothing is
//! decided behind ship's back: no symlink following, no path rewriting, no owner
//! names, no sparse detection. `tar::Header` is used only to encode the fields.

use std::io::{self, Write};

use manifests::manifest::Mode;

/// Size of a tar block.
pub(crate) const BLOCK: u64 = 512;

/// Name given to PAX extended headers (the name is ignored by readers).
const PAX_NAME: &[u8] = b"././@PaxHeader";

/// Longest name or link target a plain ustar header holds.
const USTAR_NAME_MAX: usize = 100;

/// What an entry header describes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind<'a> {
    Dir,
    File { size: u64 },
    Symlink { target: &'a str },
}

/// Writes tar headers and padding into `out`, all with the same normalised mtime.
pub(crate) struct TarWriter<W: Write> {
    out: W,
    mtime: u64,
}

impl<W: Write> TarWriter<W> {
    pub(crate) fn new(out: W, mtime: u64) -> Self {
        TarWriter { out, mtime }
    }

    /// Writes the header (and a PAX header before it when needed) of one entry.
    /// A file's `size` bytes of data must follow, then [`TarWriter::pad`].
    pub(crate) fn header(&mut self, path: &str, mode: Mode, kind: Kind<'_>) -> io::Result<()> {
        let mut pax = Vec::new();
        let mut header = self.base_header(mode.bits());
        let (entry_type, size, link) = match kind {
            Kind::Dir => (tar::EntryType::Directory, 0, None),
            Kind::File { size } => (tar::EntryType::Regular, size, None),
            Kind::Symlink { target } => (tar::EntryType::Symlink, 0, Some(target)),
        };
        header.set_entry_type(entry_type);
        header.set_size(size);
        let ustar = header
            .as_ustar_mut()
            .expect("new_ustar gives a ustar header");
        put_name(&mut ustar.name, path, "path", &mut pax);
        if let Some(link) = link {
            put_name(&mut ustar.linkname, link, "linkpath", &mut pax);
        }
        header.set_cksum();
        if !pax.is_empty() {
            let mut pax_header = self.base_header(Mode::REGULAR.bits());
            pax_header.set_entry_type(tar::EntryType::XHeader);
            pax_header.set_size(pax.len() as u64);
            let ustar = pax_header.as_ustar_mut().expect("ustar");
            ustar.name[..PAX_NAME.len()].copy_from_slice(PAX_NAME);
            pax_header.set_cksum();
            self.out.write_all(pax_header.as_bytes())?;
            self.out.write_all(&pax)?;
            self.pad(pax.len() as u64)?;
        }
        self.out.write_all(header.as_bytes())
    }

    /// Writes the zeros that round `len` bytes of data up to a whole block.
    pub(crate) fn pad(&mut self, len: u64) -> io::Result<()> {
        let rest = (BLOCK - len % BLOCK) % BLOCK;
        self.out.write_all(&[0u8; BLOCK as usize][..rest as usize])
    }

    /// Writes the two zero blocks that end an archive and returns the sink.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; 2 * BLOCK as usize])?;
        Ok(self.out)
    }

    /// The sink, for writing entry data.
    pub(crate) fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }

    /// The sink, without ending the archive (for the manifest's own frame).
    pub(crate) fn into_inner(self) -> W {
        self.out
    }

    fn base_header(&self, mode: u32) -> tar::Header {
        let mut header = tar::Header::new_ustar();
        header.set_mode(mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(self.mtime);
        header
    }
}

/// Puts `value` into a ustar name field, or, when it is too long, a truncated copy
/// there and the whole value into a PAX record.
fn put_name(field: &mut [u8; USTAR_NAME_MAX], value: &str, key: &str, pax: &mut Vec<u8>) {
    let bytes = value.as_bytes();
    let n = bytes.len().min(USTAR_NAME_MAX);
    field[..n].copy_from_slice(&bytes[..n]);
    if bytes.len() > USTAR_NAME_MAX {
        pax_record(pax, key, bytes);
    }
}

/// Appends one PAX record, `"<len> <key>=<value>\n"`, where `<len>` counts the whole
/// record including its own digits.
pub(crate) fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let rest = key.len() + value.len() + 3; // space, '=', newline
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_lengths_count_themselves() {
        let mut out = Vec::new();
        pax_record(&mut out, "path", b"abc");
        assert_eq!(out, b"12 path=abc\n");
        // 98 bytes without the length: 2 digits would make 100, which has 3.
        let mut out = Vec::new();
        pax_record(&mut out, "path", &[b'x'; 91]);
        assert_eq!(&out[..4], b"101 ");
        assert_eq!(out.len(), 101);
        let mut out = Vec::new();
        pax_record(&mut out, "path", &[b'x'; 90]);
        assert_eq!(&out[..3], b"99 ");
        assert_eq!(out.len(), 99);
    }

    #[test]
    fn headers_are_normalised_and_long_names_use_pax() {
        let mut w = TarWriter::new(Vec::new(), 1234);
        w.header("bin", Mode::EXECUTABLE, Kind::Dir).unwrap();
        let long = "d/".repeat(60) + "file";
        w.header(&long, Mode::REGULAR, Kind::File { size: 0 })
            .unwrap();
        let bytes = w.finish().unwrap();

        let mut archive = tar::Archive::new(&bytes[..]);
        let entries: Vec<_> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    String::from_utf8(e.path_bytes().into_owned()).unwrap(),
                    h.mode().unwrap(),
                    h.uid().unwrap(),
                    h.mtime().unwrap(),
                    h.username_bytes().map(<[u8]>::to_vec),
                )
            })
            .collect();
        assert_eq!(
            entries,
            vec![
                ("bin".into(), 0o755, 0, 1234, Some(vec![])),
                (long, 0o644, 0, 1234, Some(vec![])),
            ]
        );
    }
}
