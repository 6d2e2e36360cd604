//! How records are printed and read, at kcat's level: a record per delimiter of the user's
//! choice, values as raw bytes or base64, null keys and values told apart from empty ones,
//! and a template (`%k %v %p %o %t %T %h`) for anything else.

use std::io::Write;

use base64::Engine;
use serde_json::json;
use weir_client::ConsumedRecord;

/// Bytes as they are written or read: verbatim, or base64 (binary-safe in text and JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ValueFormat {
    #[default]
    Raw,
    Base64,
}

impl ValueFormat {
    pub fn encode(self, bytes: &[u8]) -> Vec<u8> {
        match self {
            ValueFormat::Raw => bytes.to_vec(),
            ValueFormat::Base64 => base64::engine::general_purpose::STANDARD
                .encode(bytes)
                .into_bytes(),
        }
    }

    /// # Errors
    /// Text that is not base64, with `Base64`.
    pub fn decode(self, bytes: &[u8]) -> Result<Vec<u8>, String> {
        match self {
            ValueFormat::Raw => Ok(bytes.to_vec()),
            ValueFormat::Base64 => base64::engine::general_purpose::STANDARD
                .decode(bytes)
                .map_err(|e| format!("not base64: {e}")),
        }
    }
}

/// What `--format` says for records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordFormat {
    /// The value, then the delimiter.
    Text,
    /// One JSON object per line.
    Json,
    /// kcat's: `%t` topic, `%p` partition, `%o` offset, `%T` timestamp, `%k` key, `%v` value,
    /// `%h` headers (`k=v,k=v`), `%K` and `%S` key and value lengths (-1 for null), `%%`;
    /// `\n`, `\t`, `\r` and `\\` escapes. No delimiter is added.
    Template(Vec<Piece>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Literal(Vec<u8>),
    Topic,
    Partition,
    Offset,
    Timestamp,
    Key,
    Value,
    Headers,
    KeyLength,
    ValueLength,
}

impl RecordFormat {
    /// Parses `text`, `json` or a template.
    ///
    /// # Errors
    /// An unknown `%` code or escape.
    pub fn parse(text: &str) -> Result<RecordFormat, String> {
        match text {
            "text" => return Ok(RecordFormat::Text),
            "json" => return Ok(RecordFormat::Json),
            _ if !text.contains(['%', '\\']) => {
                return Err(format!(
                    "{text:?} is not a format: text, json, or a template with %k %v %p %o %t %T %h %K %S"
                ));
            }
            _ => {}
        }
        let mut pieces = Vec::new();
        let mut literal = Vec::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            let piece = match c {
                '%' => match chars.next() {
                    Some('t') => Piece::Topic,
                    Some('p') => Piece::Partition,
                    Some('o') => Piece::Offset,
                    Some('T') => Piece::Timestamp,
                    Some('k') => Piece::Key,
                    Some('v') => Piece::Value,
                    Some('h') => Piece::Headers,
                    Some('K') => Piece::KeyLength,
                    Some('S') => Piece::ValueLength,
                    Some('%') => {
                        literal.push(b'%');
                        continue;
                    }
                    other => return Err(format!("unknown format code %{}", other.unwrap_or(' '))),
                },
                '\\' => {
                    let escaped = match chars.next() {
                        Some('n') => b'\n',
                        Some('t') => b'\t',
                        Some('r') => b'\r',
                        Some('\\') => b'\\',
                        other => {
                            return Err(format!("unknown escape \\{}", other.unwrap_or(' ')));
                        }
                    };
                    literal.push(escaped);
                    continue;
                }
                c => {
                    let mut buffer = [0u8; 4];
                    literal.extend_from_slice(c.encode_utf8(&mut buffer).as_bytes());
                    continue;
                }
            };
            if !literal.is_empty() {
                pieces.push(Piece::Literal(std::mem::take(&mut literal)));
            }
            pieces.push(piece);
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        Ok(RecordFormat::Template(pieces))
    }
}

/// How a record's bytes are written.
#[derive(Debug, Clone)]
pub struct Printer {
    pub format: RecordFormat,
    pub values: ValueFormat,
    /// After each record in `Text`.
    pub delimiter: Vec<u8>,
    /// What a null key or value prints as in `Text` and templates.
    pub null: Vec<u8>,
}

impl Printer {
    /// Writes one record.
    ///
    /// # Errors
    /// The writer's.
    pub fn print(&self, out: &mut impl Write, record: &ConsumedRecord) -> std::io::Result<()> {
        let bytes = |b: Option<&[u8]>| match b {
            Some(b) => self.values.encode(b),
            None => self.null.clone(),
        };
        match &self.format {
            RecordFormat::Text => {
                out.write_all(&bytes(record.value.as_deref()))?;
                out.write_all(&self.delimiter)
            }
            RecordFormat::Json => writeln!(out, "{}", self.json(record)),
            RecordFormat::Template(pieces) => {
                for piece in pieces {
                    match piece {
                        Piece::Literal(text) => out.write_all(text)?,
                        Piece::Topic => out.write_all(record.topic.as_bytes())?,
                        Piece::Partition => write!(out, "{}", record.partition)?,
                        Piece::Offset => write!(out, "{}", record.offset)?,
                        Piece::Timestamp => write!(out, "{}", record.timestamp)?,
                        Piece::Key => out.write_all(&bytes(record.key.as_deref()))?,
                        Piece::Value => out.write_all(&bytes(record.value.as_deref()))?,
                        Piece::KeyLength => write!(out, "{}", length(record.key.as_deref()))?,
                        Piece::ValueLength => {
                            write!(out, "{}", length(record.value.as_deref()))?;
                        }
                        Piece::Headers => {
                            for (i, (key, value)) in record.headers.iter().enumerate() {
                                if i > 0 {
                                    out.write_all(b",")?;
                                }
                                out.write_all(key.as_bytes())?;
                                out.write_all(b"=")?;
                                out.write_all(&bytes(value.as_deref()))?;
                            }
                        }
                    }
                }
                Ok(())
            }
        }
    }

    fn json(&self, record: &ConsumedRecord) -> serde_json::Value {
        let text = |b: Option<&[u8]>| match (b, self.values) {
            (None, _) => serde_json::Value::Null,
            (Some(b), ValueFormat::Base64) => {
                serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(b))
            }
            (Some(b), ValueFormat::Raw) => {
                serde_json::Value::String(String::from_utf8_lossy(b).into_owned())
            }
        };
        let headers: serde_json::Map<String, serde_json::Value> = record
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), text(v.as_deref())))
            .collect();
        json!({
            "topic": &*record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "timestamp": record.timestamp,
            "key": text(record.key.as_deref()),
            "value": text(record.value.as_deref()),
            "headers": headers,
        })
    }
}

fn length(bytes: Option<&[u8]>) -> i64 {
    bytes.map_or(-1, |b| b.len() as i64)
}

/// What separates records, in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delimiter(pub Vec<u8>);

/// Parses `\n`, `\t`, `\r`, `\\` and `\0` in a delimiter given on the command line.
///
/// # Errors
/// An empty delimiter.
pub fn delimiter(text: &str) -> Result<Delimiter, String> {
    let unescaped = text
        .replace("\\n", "\n")
        .replace("\\t", "\t")
        .replace("\\r", "\r")
        .replace("\\0", "\0")
        .replace("\\\\", "\\");
    if unescaped.is_empty() {
        return Err("a delimiter cannot be empty".into());
    }
    Ok(Delimiter(unescaped.into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::sync::Arc;

    fn record() -> ConsumedRecord {
        ConsumedRecord {
            topic: Arc::from("orders"),
            partition: 2,
            offset: 41,
            timestamp: 1000,
            key: Some(Bytes::from_static(b"alice")),
            value: None,
            headers: vec![("source".into(), Some(Bytes::from_static(b"cli")))],
        }
    }

    fn printed(printer: &Printer) -> Vec<u8> {
        let mut out = Vec::new();
        printer.print(&mut out, &record()).expect("print");
        out
    }

    #[test]
    fn a_template_prints_every_field_and_tells_null_from_empty() {
        let printer = Printer {
            format: RecordFormat::parse("%t/%p@%o %T %k=%v (%K,%S) [%h] 100%%\\n")
                .expect("template"),
            values: ValueFormat::Raw,
            delimiter: b"\n".to_vec(),
            null: b"NULL".to_vec(),
        };
        assert_eq!(
            String::from_utf8(printed(&printer)).expect("utf-8"),
            "orders/2@41 1000 alice=NULL (5,-1) [source=cli] 100%\n"
        );
        assert!(RecordFormat::parse("%x").is_err());
        assert!(RecordFormat::parse("plain").is_err());
    }

    #[test]
    fn base64_is_binary_safe_both_ways() {
        let encoded = ValueFormat::Base64.encode(&[0, 255, b'\n']);
        assert_eq!(encoded, b"AP8K");
        assert_eq!(
            ValueFormat::Base64.decode(&encoded).expect("decodes"),
            [0, 255, b'\n']
        );
        assert!(ValueFormat::Base64.decode(b"not base64!").is_err());
        assert_eq!(delimiter("\\0").expect("nul").0, b"\0");
        assert!(delimiter("").is_err());
    }
}
