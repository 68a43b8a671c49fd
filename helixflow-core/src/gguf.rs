//! A defensive reader for GGUF model files.
//!
//! GGUF is the file format of llama.cpp: a header of typed key/value metadata, a table of
//! tensor descriptions and the tensor data. We parse it ourselves, over a memory map, instead
//! of using candle's reader because model files come from users: every count and length is
//! checked against the bytes that are actually left in the file before anything is
//! allocated, so a truncated or hostile file is a typed error and never a panic or an
//! allocation of gigabytes.

use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType, QTensor};
use candle_core::Device;
use memmap2::Mmap;

use crate::error::{Error, Result};

const GGUF_MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// Tensors have at most four dimensions in ggml.
const MAX_DIMS: u32 = 4;

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetadataValue {
    /// Unsigned integer of any width.
    U64(u64),
    /// Signed integer of any width.
    I64(i64),
    /// 32- or 64-bit float.
    F64(f64),
    /// Boolean.
    Bool(bool),
    /// UTF-8 string (invalid UTF-8 is replaced, not rejected).
    String(String),
    /// Array of values.
    Array(Vec<MetadataValue>),
}

impl MetadataValue {
    /// The value as an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetadataValue::U64(v) => Some(v),
            MetadataValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, if it is numeric.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetadataValue::F64(v) => Some(v),
            MetadataValue::U64(v) => Some(v as f64),
            MetadataValue::I64(v) => Some(v as f64),
            _ => None,
        }
    }

    /// The value as a string slice.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetadataValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as a boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetadataValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The value as an array.
    pub fn as_array(&self) -> Option<&[MetadataValue]> {
        match self {
            MetadataValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// Where one tensor lives in the file.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    /// The ggml storage type.
    pub dtype: GgmlDType,
    /// Shape in candle order (outermost first; GGUF stores innermost first).
    pub shape: Vec<usize>,
    /// Byte offset of the data from the start of the file.
    pub offset: usize,
    /// Byte length of the data.
    pub len: usize,
}

/// An opened GGUF file: parsed metadata and tensor table over a memory map (or over bytes
/// in memory, for a model converted at load: [`GgufFile::from_parts`]).
pub struct GgufFile {
    path: PathBuf,
    data: TensorData,
    metadata: HashMap<String, MetadataValue>,
    tensors: HashMap<String, TensorInfo>,
}

/// Where a [`GgufFile`]'s tensor bytes are.
enum TensorData {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for TensorData {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Self::Mapped(mmap) => mmap,
            Self::Owned(bytes) => bytes,
        }
    }
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Opens and parses `path`. Tensor data is not read until [`GgufFile::tensor`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::ModelNotFound(path.display().to_string()),
            _ => Error::io(&path, e),
        })?;
        // SAFETY: the map is read-only; a file truncated underneath us would fault, which is
        // the accepted contract of every memory-mapped model loader (llama.cpp, candle).
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
        let (metadata, tensors) =
            parse(&mmap).map_err(|reason| Error::invalid_file(&path, reason))?;
        Ok(Self {
            path,
            data: TensorData::Mapped(mmap),
            metadata,
            tensors,
        })
    }

    /// A model held in memory in GGUF's terms: `metadata`, and `tensors` whose offsets point
    /// into `data`. `path` names where it came from in errors. Fails if a tensor's bytes lie
    /// outside `data`.
    pub fn from_parts(
        path: impl Into<PathBuf>,
        metadata: HashMap<String, MetadataValue>,
        tensors: HashMap<String, TensorInfo>,
        data: Vec<u8>,
    ) -> Result<Self> {
        let path = path.into();
        if let Some((name, _)) = tensors.iter().find(|(_, t)| {
            t.offset
                .checked_add(t.len)
                .is_none_or(|end| end > data.len())
        }) {
            return Err(Error::invalid_file(
                &path,
                format!("tensor `{name}` lies outside the data"),
            ));
        }
        Ok(Self {
            path,
            data: TensorData::Owned(data),
            metadata,
            tensors,
        })
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All metadata key/values.
    pub fn metadata(&self) -> &HashMap<String, MetadataValue> {
        &self.metadata
    }

    /// One metadata value.
    pub fn get(&self, key: &str) -> Option<&MetadataValue> {
        self.metadata.get(key)
    }

    /// A required unsigned integer.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        self.get(key)
            .and_then(MetadataValue::as_u64)
            .ok_or_else(|| self.missing(key, "an unsigned integer"))
    }

    /// A required float.
    pub fn get_f64(&self, key: &str) -> Result<f64> {
        self.get(key)
            .and_then(MetadataValue::as_f64)
            .ok_or_else(|| self.missing(key, "a number"))
    }

    /// A required string.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        self.get(key)
            .and_then(MetadataValue::as_str)
            .ok_or_else(|| self.missing(key, "a string"))
    }

    /// An optional array of strings (`None` when absent; an error when of another type).
    pub fn get_string_array(&self, key: &str) -> Result<Option<Vec<String>>> {
        self.get_array(key, "an array of strings", |v| {
            v.as_str().map(str::to_owned)
        })
    }

    /// An optional array of numbers (`None` when absent).
    pub fn get_f64_array(&self, key: &str) -> Result<Option<Vec<f64>>> {
        self.get_array(key, "an array of numbers", MetadataValue::as_f64)
    }

    /// An optional array whose every item `convert` accepts; `what` names the expected type.
    fn get_array<T>(
        &self,
        key: &str,
        what: &str,
        convert: impl Fn(&MetadataValue) -> Option<T>,
    ) -> Result<Option<Vec<T>>> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        let items = value.as_array().ok_or_else(|| self.missing(key, what))?;
        items
            .iter()
            .map(|v| convert(v).ok_or_else(|| self.missing(key, what)))
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    fn missing(&self, key: &str, what: &str) -> Error {
        Error::invalid_file(
            &self.path,
            format!("metadata key `{key}` is missing or is not {what}"),
        )
    }

    /// The tensor table.
    pub fn tensor_infos(&self) -> &HashMap<String, TensorInfo> {
        &self.tensors
    }

    /// Whether a tensor of that name exists.
    pub fn has_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// One tensor's table entry and its bytes in the map.
    pub fn tensor_bytes(&self, name: &str) -> Result<(&TensorInfo, &[u8])> {
        let info = self.tensors.get(name).ok_or_else(|| {
            Error::invalid_file(&self.path, format!("tensor `{name}` is missing"))
        })?;
        Ok((info, &self.data[info.offset..info.offset + info.len]))
    }

    /// Loads one tensor onto `device`, copying it out of the map.
    pub fn tensor(&self, name: &str, device: &Device) -> Result<QTensor> {
        let (info, bytes) = self.tensor_bytes(name)?;
        load_qtensor(info.dtype, bytes, info.shape.clone(), device)
    }

    /// Loads rows `rows` of tensor `name` read as a matrix of its last dimension's width (one
    /// expert of a `[experts, rows, cols]` stack, part of a fused projection) onto `device`
    /// as a `[rows, cols]` matrix, copying only those rows out of the map.
    pub fn tensor_rows(&self, name: &str, rows: Range<usize>, device: &Device) -> Result<QTensor> {
        let (info, bytes) = self.tensor_bytes(name)?;
        let (&cols, leading) = info.shape.split_last().unwrap_or((&0, &[]));
        let all_rows: usize = leading.iter().product();
        if cols == 0 || rows.start >= rows.end || rows.end > all_rows || info.len % all_rows != 0 {
            return Err(Error::invalid_file(
                &self.path,
                format!(
                    "tensor `{name}` of shape {:?} has no rows {rows:?}",
                    info.shape
                ),
            ));
        }
        let row_bytes = info.len / all_rows;
        let part = &bytes[rows.start * row_bytes..rows.end * row_bytes];
        load_qtensor(info.dtype, part, vec![rows.len(), cols], device)
    }
}

/// A tensor of `dims` from its ggml bytes. candle reinterprets the bytes as blocks whose
/// fields need up to 4-byte alignment: bytes at an odd place (a file with an odd alignment
/// setting, rows of an odd width) get an aligned copy instead of undefined behaviour.
fn load_qtensor(
    dtype: GgmlDType,
    bytes: &[u8],
    dims: Vec<usize>,
    device: &Device,
) -> Result<QTensor> {
    if (bytes.as_ptr() as usize).is_multiple_of(4) {
        return Ok(qtensor_from_ggml(dtype, bytes, dims, device)?);
    }
    let mut words = vec![0u32; bytes.len().div_ceil(4)];
    let aligned = bytemuck_bytes_mut(&mut words);
    aligned[..bytes.len()].copy_from_slice(bytes);
    Ok(qtensor_from_ggml(
        dtype,
        &aligned[..bytes.len()],
        dims,
        device,
    )?)
}

/// Views a `u32` buffer as bytes.
fn bytemuck_bytes_mut(words: &mut [u32]) -> &mut [u8] {
    // SAFETY: u8 has no alignment or validity requirements and the length is exact.
    unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), words.len() * 4) }
}

/// Maps a ggml type id to candle's type, for the types candle can compute with.
fn ggml_dtype(id: u32) -> Option<GgmlDType> {
    Some(match id {
        0 => GgmlDType::F32,
        1 => GgmlDType::F16,
        2 => GgmlDType::Q4_0,
        3 => GgmlDType::Q4_1,
        6 => GgmlDType::Q5_0,
        7 => GgmlDType::Q5_1,
        8 => GgmlDType::Q8_0,
        9 => GgmlDType::Q8_1,
        10 => GgmlDType::Q2K,
        11 => GgmlDType::Q3K,
        12 => GgmlDType::Q4K,
        13 => GgmlDType::Q5K,
        14 => GgmlDType::Q6K,
        15 => GgmlDType::Q8K,
        30 => GgmlDType::BF16,
        _ => return None,
    })
}

type Parsed = (HashMap<String, MetadataValue>, HashMap<String, TensorInfo>);

/// Parses the header and tensor table; the error is a human-readable reason.
fn parse(data: &[u8]) -> std::result::Result<Parsed, String> {
    let mut r = Reader { data, pos: 0 };
    let magic = r.bytes(4)?;
    if magic != GGUF_MAGIC {
        return Err("not a GGUF file (bad magic)".into());
    }
    let version = r.u32()?;
    if !(2..=3).contains(&version) {
        return Err(format!("unsupported GGUF version {version} (2 and 3 are)"));
    }
    let tensor_count = r.u64()?;
    let kv_count = r.u64()?;
    // Every key/value needs at least 12 bytes and every tensor entry at least 24: reject
    // counts that the file cannot possibly hold before reserving anything for them.
    r.check_count(kv_count, 12, "metadata entries")?;
    r.check_count(tensor_count, 24, "tensors")?;

    let mut metadata = HashMap::new();
    for _ in 0..kv_count {
        let key = r.string()?;
        let ty = r.u32()?;
        let value = r.value(ty, 0)?;
        metadata.insert(key, value);
    }

    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(v) => match v.as_u64() {
            Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => a,
            _ => return Err("general.alignment must be a power of two".into()),
        },
    };

    let mut raw_tensors = Vec::new();
    for _ in 0..tensor_count {
        let name = r.string()?;
        let n_dims = r.u32()?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(format!("tensor `{name}` has {n_dims} dimensions"));
        }
        let mut shape = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            let d = r.u64()?;
            shape.push(usize::try_from(d).map_err(|_| format!("tensor `{name}` is too large"))?);
        }
        shape.reverse();
        let ty = r.u32()?;
        let offset = r.u64()?;
        raw_tensors.push((name, shape, ty, offset));
    }

    let data_start = (r.pos as u64).div_ceil(alignment) * alignment;
    let mut tensors = HashMap::new();
    for (name, shape, ty, offset) in raw_tensors {
        let dtype =
            ggml_dtype(ty).ok_or_else(|| format!("tensor `{name}` has unsupported type {ty}"))?;
        let elems = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| format!("tensor `{name}` has an absurd shape {shape:?}"))?;
        if elems == 0 || elems % dtype.block_size() != 0 {
            return Err(format!(
                "tensor `{name}` has {elems} elements, not a whole number of {dtype:?} blocks"
            ));
        }
        let len = (elems / dtype.block_size())
            .checked_mul(dtype.type_size())
            .ok_or_else(|| format!("tensor `{name}` is too large"))?;
        let start = data_start
            .checked_add(offset)
            .and_then(|s| usize::try_from(s).ok())
            .ok_or_else(|| format!("tensor `{name}` has an absurd offset"))?;
        let end = start
            .checked_add(len)
            .ok_or_else(|| format!("tensor `{name}` has an absurd offset"))?;
        if end > data.len() {
            return Err(format!(
                "tensor `{name}` ends at byte {end} but the file has {} bytes (truncated?)",
                data.len()
            ));
        }
        if tensors
            .insert(
                name.clone(),
                TensorInfo {
                    dtype,
                    shape,
                    offset: start,
                    len,
                },
            )
            .is_some()
        {
            return Err(format!("tensor `{name}` appears twice"));
        }
    }
    Ok((metadata, tensors))
}

/// A bounds-checked cursor over the file's bytes.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

/// Arrays nest at most this deep (GGUF writers never nest at all in practice).
const MAX_ARRAY_DEPTH: usize = 4;

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    fn bytes(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        if n > self.remaining() {
            return Err(format!(
                "unexpected end of file at byte {} (wanted {n} more bytes)",
                self.pos
            ));
        }
        let out = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> std::result::Result<[u8; N], String> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    fn u32(&mut self) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn check_count(
        &self,
        count: u64,
        min_item_bytes: usize,
        what: &str,
    ) -> std::result::Result<(), String> {
        let fits = usize::try_from(count)
            .ok()
            .and_then(|c| c.checked_mul(min_item_bytes))
            .is_some_and(|need| need <= self.remaining());
        if fits {
            Ok(())
        } else {
            Err(format!(
                "the header claims {count} {what}, more than the file can hold"
            ))
        }
    }

    fn string(&mut self) -> std::result::Result<String, String> {
        let len = self.u64()?;
        let len = usize::try_from(len).map_err(|_| "absurd string length".to_string())?;
        let bytes = self.bytes(len)?;
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }

    fn value(&mut self, ty: u32, depth: usize) -> std::result::Result<MetadataValue, String> {
        use MetadataValue as V;
        Ok(match ty {
            0 => V::U64(u64::from(self.array::<1>()?[0])),
            1 => V::I64(i64::from(i8::from_le_bytes(self.array()?))),
            2 => V::U64(u64::from(u16::from_le_bytes(self.array()?))),
            3 => V::I64(i64::from(i16::from_le_bytes(self.array()?))),
            4 => V::U64(u64::from(self.u32()?)),
            5 => V::I64(i64::from(i32::from_le_bytes(self.array()?))),
            6 => V::F64(f64::from(f32::from_le_bytes(self.array()?))),
            7 => V::Bool(self.array::<1>()?[0] != 0),
            8 => V::String(self.string()?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err("metadata arrays nested too deeply".into());
                }
                let item_ty = self.u32()?;
                let len = self.u64()?;
                self.check_count(len, min_value_size(item_ty), "array items")?;
                // check_count bounds len by the file size, so the reservation is bounded too.
                let mut items = Vec::with_capacity(len as usize);
                for _ in 0..len {
                    items.push(self.value(item_ty, depth + 1)?);
                }
                V::Array(items)
            }
            10 => V::U64(self.u64()?),
            11 => V::I64(i64::from_le_bytes(self.array()?)),
            12 => V::F64(f64::from_le_bytes(self.array()?)),
            other => return Err(format!("unknown metadata value type {other}")),
        })
    }
}

/// The fewest bytes a value of a type occupies.
fn min_value_size(ty: u32) -> usize {
    match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 => 8,
        9 => 12,
        _ => 8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a GGUF image in memory.
    #[derive(Default)]
    struct Builder {
        kvs: Vec<u8>,
        kv_count: u64,
        infos: Vec<u8>,
        tensor_count: u64,
        data: Vec<u8>,
    }

    fn put_str(buf: &mut Vec<u8>, s: &str) {
        buf.extend((s.len() as u64).to_le_bytes());
        buf.extend(s.as_bytes());
    }

    impl Builder {
        fn kv_u32(mut self, key: &str, v: u32) -> Self {
            put_str(&mut self.kvs, key);
            self.kvs.extend(4u32.to_le_bytes());
            self.kvs.extend(v.to_le_bytes());
            self.kv_count += 1;
            self
        }

        fn kv_str(mut self, key: &str, v: &str) -> Self {
            put_str(&mut self.kvs, key);
            self.kvs.extend(8u32.to_le_bytes());
            put_str(&mut self.kvs, v);
            self.kv_count += 1;
            self
        }

        fn tensor_f32(mut self, name: &str, dims: &[u64], values: &[f32]) -> Self {
            put_str(&mut self.infos, name);
            self.infos.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                self.infos.extend(d.to_le_bytes());
            }
            self.infos.extend(0u32.to_le_bytes());
            self.infos.extend((self.data.len() as u64).to_le_bytes());
            for v in values {
                self.data.extend(v.to_le_bytes());
            }
            while !self.data.len().is_multiple_of(32) {
                self.data.push(0);
            }
            self.tensor_count += 1;
            self
        }

        fn build(self) -> Vec<u8> {
            let mut out = b"GGUF".to_vec();
            out.extend(3u32.to_le_bytes());
            out.extend(self.tensor_count.to_le_bytes());
            out.extend(self.kv_count.to_le_bytes());
            out.extend(self.kvs);
            out.extend(self.infos);
            while !out.len().is_multiple_of(32) {
                out.push(0);
            }
            out.extend(self.data);
            out
        }
    }

    fn write(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, bytes).unwrap();
        f
    }

    fn open_err(bytes: &[u8]) -> String {
        let f = write(bytes);
        match GgufFile::open(f.path()) {
            Err(Error::InvalidModelFile { reason, .. }) => reason,
            other => panic!("expected InvalidModelFile, got {other:?}"),
        }
    }

    #[test]
    fn reads_metadata_and_tensors() {
        let bytes = Builder::default()
            .kv_str("general.architecture", "llama")
            .kv_u32("llama.block_count", 2)
            .tensor_f32("w", &[3, 2], &[1., 2., 3., 4., 5., 6.])
            .build();
        let f = write(&bytes);
        let g = GgufFile::open(f.path()).unwrap();
        assert_eq!(g.get_str("general.architecture").unwrap(), "llama");
        assert_eq!(g.get_u64("llama.block_count").unwrap(), 2);
        let t = g.tensor("w", &Device::Cpu).unwrap();
        assert_eq!(t.shape().dims(), &[2, 3]);
        let v = t
            .dequantize(&Device::Cpu)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(v, vec![vec![1., 2., 3.], vec![4., 5., 6.]]);
        assert!(g.get_u64("general.architecture").is_err());
        assert!(g.tensor("missing", &Device::Cpu).is_err());
    }

    #[test]
    fn rejects_bad_magic_and_version() {
        assert!(open_err(b"GGML\x03\0\0\0").contains("magic"));
        let mut bytes = Builder::default().build();
        bytes[4] = 9;
        assert!(open_err(&bytes).contains("version"));
    }

    #[test]
    fn rejects_truncation_everywhere() {
        let bytes = Builder::default()
            .kv_str("general.architecture", "llama")
            .tensor_f32("w", &[4], &[1., 2., 3., 4.])
            .build();
        // Every prefix that cuts into the 16 bytes of tensor data (the last 16 bytes are
        // alignment padding) is an error, never a panic.
        for cut in 0..bytes.len() - 16 {
            let f = write(&bytes[..cut]);
            assert!(GgufFile::open(f.path()).is_err(), "prefix of {cut} bytes");
        }
    }

    #[test]
    fn rejects_absurd_counts_and_lengths_without_allocating() {
        let mut bytes = b"GGUF".to_vec();
        bytes.extend(3u32.to_le_bytes());
        bytes.extend(u64::MAX.to_le_bytes()); // tensors
        bytes.extend(1u64.to_le_bytes());
        assert!(open_err(&bytes).contains("more than the file can hold"));

        let mut bytes = b"GGUF".to_vec();
        bytes.extend(3u32.to_le_bytes());
        bytes.extend(0u64.to_le_bytes());
        bytes.extend(1u64.to_le_bytes());
        bytes.extend((1u64 << 62).to_le_bytes()); // key length
        bytes.extend([0u8; 16]);
        assert!(open_err(&bytes).contains("end of file"));

        // An array claiming 2^40 items.
        let mut bytes = b"GGUF".to_vec();
        bytes.extend(3u32.to_le_bytes());
        bytes.extend(0u64.to_le_bytes());
        bytes.extend(1u64.to_le_bytes());
        put_str(&mut bytes, "k");
        bytes.extend(9u32.to_le_bytes());
        bytes.extend(4u32.to_le_bytes());
        bytes.extend((1u64 << 40).to_le_bytes());
        bytes.extend([0u8; 16]);
        assert!(open_err(&bytes).contains("more than the file can hold"));
    }

    #[test]
    fn rejects_absurd_tensor_shapes() {
        let bytes = Builder::default()
            .tensor_f32("w", &[u64::MAX / 2, 4], &[1., 2.])
            .build();
        let reason = open_err(&bytes);
        assert!(
            reason.contains("absurd") || reason.contains("too large"),
            "{reason}"
        );
        let bytes = Builder::default()
            .tensor_f32("w", &[1 << 20, 1 << 10], &[1., 2.])
            .build();
        assert!(open_err(&bytes).contains("truncated"));
    }

    #[test]
    fn missing_file_is_model_not_found() {
        assert!(matches!(
            GgufFile::open("/nonexistent/model.gguf"),
            Err(Error::ModelNotFound(_))
        ));
    }
}
