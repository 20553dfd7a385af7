//! A suite file's text. A small file is read into memory; a large one (a
//! million inline tests is tens of MB) is mapped instead, and the pages
//! already parsed are handed back to the kernel as the tests are read, so
//! the text never sits whole in the process's memory: the parser reads the
//! tests in order, and a page it touches again (an error being located, a
//! test read after a fall-back) is read again from the file.
//!
//! The one place the project uses `unsafe`: mapping a file, and telling the
//! kernel it may drop the mapped pages. Both are sound for a file that is
//! not changed while it is read. A mapped suite that another program
//! truncates meanwhile ends the process with SIGBUS (a file read whole
//! would have been read before the change); that is the price of not
//! holding the text.

#![allow(unsafe_code)]

use std::{fs::File, io, path::Path};

use memmap2::{Mmap, UncheckedAdvice};

/// Files at least this large are mapped rather than read.
const MAP_FROM: u64 = 16 * 1024 * 1024;

pub struct SuiteText(Inner);

enum Inner {
    Read(String),
    /// Checked to be UTF-8 when mapped.
    Mapped(Mmap),
}

impl SuiteText {
    pub fn read(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        if file.metadata()?.len() < MAP_FROM {
            return io::read_to_string(file).map(|text| Self(Inner::Read(text)));
        }
        // SAFETY: the map is read-only and lives as long as `Self`; the
        // file changing meanwhile is the caveat in the module's comment.
        let map = unsafe { Mmap::map(&file)? };
        std::str::from_utf8(&map).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let text = Self(Inner::Mapped(map));
        text.release();
        Ok(text)
    }

    pub fn as_str(&self) -> &str {
        match &self.0 {
            Inner::Read(text) => text,
            // SAFETY: checked to be UTF-8 in `read`, and the mapping is
            // read-only: its bytes are the file's, however often they are
            // dropped and read again.
            Inner::Mapped(map) => unsafe { std::str::from_utf8_unchecked(map) },
        }
    }

    /// Hands the mapped pages back to the kernel (a read file: nothing);
    /// those touched again are read again from the file.
    pub fn release(&self) {
        if let Inner::Mapped(map) = &self.0 {
            // SAFETY: a read-only shared file mapping: MADV_DONTNEED drops
            // the pages from this process, and the next access reads the
            // same bytes from the file (or the page cache) again. Nothing
            // was written to them, so nothing is lost.
            let _ = unsafe { map.unchecked_advise(UncheckedAdvice::DontNeed) };
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn a_large_file_reads_the_same_mapped_and_after_its_pages_are_dropped() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        let line = "  - vars: {q: 'é and more'}\n";
        let mut want = String::from("tests:\n");
        while (want.len() as u64) < MAP_FROM + 1 {
            want.push_str(line);
        }
        file.write_all(want.as_bytes()).unwrap();
        let text = SuiteText::read(file.path()).unwrap();
        assert!(matches!(text.0, Inner::Mapped(_)));
        assert_eq!(text.as_str(), want);
        text.release();
        assert_eq!(text.as_str(), want);
    }

    #[test]
    fn a_large_file_that_is_not_utf8_is_refused() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        let mut bytes = vec![b'a'; MAP_FROM as usize];
        bytes.push(0xff);
        file.write_all(&bytes).unwrap();
        let err = SuiteText::read(file.path()).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
