//! Bytes set aside per group until a document can be finished: kept in
//! memory up to a budget, then appended to one unnamed temporary file, so a
//! sink that must regroup or prefix its output holds a bounded amount of
//! memory however many results pass through it.

use std::{
    fs::File,
    io::{self, Read, Seek, SeekFrom, Write},
};

/// Bytes held in memory across all groups before they go to disk.
pub(crate) const DEFAULT_BUDGET: usize = 1 << 20;

pub(crate) struct Spill {
    budget: usize,
    buffered: usize,
    groups: Vec<Group>,
    file: Option<File>,
    file_len: u64,
}

#[derive(Default)]
struct Group {
    /// `(offset, length)` of this group's blocks in the file, in order.
    blocks: Vec<(u64, u64)>,
    buf: Vec<u8>,
}

impl Spill {
    pub(crate) fn new(budget: usize) -> Self {
        Self {
            budget,
            buffered: 0,
            groups: Vec::new(),
            file: None,
            file_len: 0,
        }
    }

    /// Appends `bytes` to `group` (groups are numbered from 0 as they come).
    pub(crate) fn append(&mut self, group: usize, bytes: &[u8]) -> io::Result<()> {
        if self.groups.len() <= group {
            self.groups.resize_with(group + 1, Group::default);
        }
        self.groups[group].buf.extend_from_slice(bytes);
        self.buffered += bytes.len();
        if self.buffered > self.budget {
            self.flush_to_file()?;
        }
        Ok(())
    }

    fn flush_to_file(&mut self) -> io::Result<()> {
        let file = match &mut self.file {
            Some(f) => f,
            None => self.file.insert(tempfile::tempfile()?),
        };
        file.seek(SeekFrom::End(0))?;
        for g in &mut self.groups {
            if g.buf.is_empty() {
                continue;
            }
            file.write_all(&g.buf)?;
            g.blocks.push((self.file_len, g.buf.len() as u64));
            self.file_len += g.buf.len() as u64;
            // Drop the capacity too: a group that was large once must not
            // keep its peak allocation while the others grow.
            g.buf = Vec::new();
        }
        self.buffered = 0;
        Ok(())
    }

    /// Everything appended to `group`, in order.
    pub(crate) fn reader(&mut self, group: usize) -> impl Read + '_ {
        let (blocks, buf): (&[(u64, u64)], &[u8]) = match self.groups.get(group) {
            Some(g) => (&g.blocks, &g.buf),
            None => (&[], &[]),
        };
        Blocks {
            file: self.file.as_ref(),
            blocks,
            left: 0,
        }
        .chain(buf)
    }
}

/// Reads a group's blocks from the spill file one after another.
struct Blocks<'a> {
    file: Option<&'a File>,
    blocks: &'a [(u64, u64)],
    left: u64,
}

impl Read for Blocks<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let Some(mut file) = self.file else {
            return Ok(0);
        };
        if self.left == 0 {
            let Some((&(offset, len), rest)) = self.blocks.split_first() else {
                return Ok(0);
            };
            file.seek(SeekFrom::Start(offset))?;
            self.blocks = rest;
            self.left = len;
        }
        let want = out
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = file.read(&mut out[..want])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(spill: &mut Spill, group: usize) -> Vec<u8> {
        let mut out = Vec::new();
        spill.reader(group).read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn groups_read_back_in_order_across_memory_and_file() {
        let mut spill = Spill::new(10);
        let mut expected = [Vec::new(), Vec::new(), Vec::new()];
        for i in 0..200u32 {
            let group = (i % 3) as usize;
            let bytes = format!("<{i}>");
            spill.append(group, bytes.as_bytes()).unwrap();
            expected[group].extend_from_slice(bytes.as_bytes());
        }
        assert!(spill.file.is_some(), "a small budget spills to disk");
        for (group, want) in expected.iter().enumerate() {
            assert_eq!(&read_all(&mut spill, group), want);
        }
        assert!(read_all(&mut spill, 7).is_empty());
    }

    #[test]
    fn nothing_touches_disk_within_the_budget() {
        let mut spill = Spill::new(1024);
        spill.append(0, b"abc").unwrap();
        spill.append(0, b"def").unwrap();
        assert!(spill.file.is_none());
        assert_eq!(read_all(&mut spill, 0), b"abcdef");
    }
}
