//! Bounds-checked primitives: a field reader and a child-box iterator. Every read of untrusted
//! bytes in this module goes through these, so garbage input yields an [`Error`], never a panic.

use crate::{Error, FourCc, Result};

/// One box found inside a parent: its type, header offset and body.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BoxRef<'a> {
    pub typ: FourCc,
    /// Absolute offset of the box header.
    pub offset: usize,
    /// Absolute offset of the first body byte.
    pub body_offset: usize,
    pub body: &'a [u8],
}

impl<'a> BoxRef<'a> {
    pub fn reader(&self) -> Reader<'a> {
        Reader::new(self.body, self.body_offset, self.typ)
    }

    pub fn children(&self) -> Children<'a> {
        Children::new(self.body, self.body_offset, self.typ)
    }

    /// Children starting `skip` bytes into the body (sample entries, full boxes like `stsd`).
    pub fn children_after(&self, skip: usize) -> Result<Children<'a>> {
        let rest = self.body.get(skip..).ok_or_else(|| self.truncated(skip))?;
        Ok(Children::new(rest, self.body_offset + skip, self.typ))
    }

    /// First child of type `typ`, if any.
    pub fn find(&self, typ: &[u8; 4]) -> Result<Option<BoxRef<'a>>> {
        for child in self.children() {
            let child = child?;
            if child.typ.0 == *typ {
                return Ok(Some(child));
            }
        }
        Ok(None)
    }

    /// First child of type `typ`, or [`Error::MissingBox`].
    pub fn require(&self, typ: &[u8; 4]) -> Result<BoxRef<'a>> {
        self.find(typ)?.ok_or(Error::MissingBox {
            box_type: FourCc(*typ),
            parent: self.typ,
            offset: self.offset,
        })
    }

    pub fn invalid(&self, reason: impl Into<String>) -> Error {
        Error::InvalidBox {
            box_type: self.typ,
            offset: self.offset,
            reason: reason.into(),
        }
    }

    fn truncated(&self, needed: usize) -> Error {
        Error::Truncated {
            box_type: self.typ,
            offset: self.body_offset,
            needed: needed as u64,
            available: self.body.len(),
        }
    }
}

/// Parsed box header: type, header length and total size (`None` = runs to the end).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Header {
    pub typ: FourCc,
    pub header_len: usize,
    pub size: Option<u64>,
}

/// Reads a box header at the start of `buf`. `Ok(None)` means `buf` is too short to tell.
pub(crate) fn read_header(buf: &[u8], offset: usize) -> Result<Option<Header>> {
    let Some(first) = buf.get(..8) else {
        return Ok(None);
    };
    let size32 = u32::from_be_bytes([first[0], first[1], first[2], first[3]]);
    let typ = FourCc([first[4], first[5], first[6], first[7]]);
    let (header_len, size) = match size32 {
        0 => (8, None),
        1 => {
            let Some(large) = buf.get(8..16) else {
                return Ok(None);
            };
            let mut b = [0u8; 8];
            b.copy_from_slice(large);
            (16, Some(u64::from_be_bytes(b)))
        }
        n => (8, Some(u64::from(n))),
    };
    if let Some(size) = size {
        if size < header_len as u64 {
            return Err(Error::InvalidBox {
                box_type: typ,
                offset,
                reason: format!(
                    "declared size {size} is smaller than its {header_len} byte header"
                ),
            });
        }
    }
    Ok(Some(Header {
        typ,
        header_len,
        size,
    }))
}

/// Iterates the boxes packed in a byte slice (a parent's body). Stops after the first error.
pub(crate) struct Children<'a> {
    data: &'a [u8],
    base: usize,
    pos: usize,
    parent: FourCc,
    done: bool,
}

impl<'a> Children<'a> {
    pub fn new(data: &'a [u8], base: usize, parent: FourCc) -> Self {
        Self {
            data,
            base,
            pos: 0,
            parent,
            done: false,
        }
    }

    fn next_box(&mut self) -> Result<BoxRef<'a>> {
        let rest = &self.data[self.pos..];
        let offset = self.base + self.pos;
        let header = read_header(rest, offset)?.ok_or(Error::Truncated {
            box_type: self.parent,
            offset,
            needed: 8,
            available: rest.len(),
        })?;
        // Size 0 inside a parent means "to the end of the parent".
        let size = header.size.unwrap_or(rest.len() as u64);
        if size > rest.len() as u64 {
            return Err(Error::Truncated {
                box_type: header.typ,
                offset,
                needed: size,
                available: rest.len(),
            });
        }
        let size = size as usize;
        self.pos += size;
        Ok(BoxRef {
            typ: header.typ,
            offset,
            body_offset: offset + header.header_len,
            body: &rest[header.header_len..size],
        })
    }
}

impl<'a> Iterator for Children<'a> {
    type Item = Result<BoxRef<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.pos >= self.data.len() {
            return None;
        }
        let item = self.next_box();
        if item.is_err() {
            self.done = true;
        }
        Some(item)
    }
}

/// Big-endian field reader over a box body.
pub(crate) struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    base: usize,
    typ: FourCc,
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8], base: usize, typ: FourCc) -> Self {
        Self {
            data,
            pos: 0,
            base,
            typ,
        }
    }

    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(Error::Truncated {
                box_type: self.typ,
                offset: self.base + self.pos,
                needed: n as u64,
                available: self.remaining(),
            });
        }
        let out = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub fn skip(&mut self, n: usize) -> Result<()> {
        self.bytes(n).map(|_| ())
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    pub fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    pub fn fourcc(&mut self) -> Result<FourCc> {
        Ok(FourCc(self.array()?))
    }

    /// `(version, flags)` of a full box.
    pub fn full_header(&mut self) -> Result<(u8, u32)> {
        let v = self.u32()?;
        Ok(((v >> 24) as u8, v & 0x00ff_ffff))
    }

    /// A field that is 32 bits in version 0 boxes and 64 bits in version 1.
    pub fn u32_or_u64(&mut self, version: u8) -> Result<u64> {
        if version == 1 {
            self.u64()
        } else {
            self.u32().map(u64::from)
        }
    }
}

/// The top-level `moof` boxes of a fragment's bytes (`[styp|sidx|prft|emsg]* moof mdat`, as
/// [`super::SplitEvent::Fragment`] gives them); every other box is skipped, and a box that runs
/// past the end is an error.
pub(crate) fn top_level_moofs(fragment: &[u8]) -> Result<Vec<BoxRef<'_>>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < fragment.len() {
        let h = read_header(&fragment[pos..], pos)?.ok_or(Error::Incomplete {
            offset: pos,
            len: fragment.len() - pos,
            what: "truncated box",
        })?;
        let size = h.size.unwrap_or((fragment.len() - pos) as u64);
        let end = usize::try_from(size)
            .ok()
            .and_then(|s| pos.checked_add(s))
            .filter(|&e| e <= fragment.len() && size >= h.header_len as u64)
            .ok_or(Error::Truncated {
                box_type: h.typ,
                offset: pos,
                needed: size,
                available: fragment.len() - pos,
            })?;
        if &h.typ.0 == b"moof" {
            out.push(BoxRef {
                typ: h.typ,
                offset: pos,
                body_offset: pos + h.header_len,
                body: &fragment[pos + h.header_len..end],
            });
        }
        pos = end;
    }
    Ok(out)
}
