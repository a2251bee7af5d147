//! The manifest's CSV, read as RFC 4180 says (what spreadsheets and pandas write): fields may
//! be quoted (commas, quotes doubled inside), lines end in LF or CRLF, and a UTF-8 byte-order
//! mark before the header is dropped. Blank lines are skipped.

/// A record: the 1-based line it starts on, and its fields.
pub(crate) type Record = (usize, Vec<String>);

/// The records of `text`, or the line of a malformed field and what is wrong with it.
pub(crate) fn records(text: &str) -> Result<Vec<Record>, (usize, String)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    let mut fields: Vec<String> = Vec::new();
    let mut field = String::new();
    let (mut line, mut start) = (1usize, 1usize);
    let (mut quoted, mut was_quoted) = (false, false);
    let mut chars = text.chars().peekable();
    let mut end_record = |fields: &mut Vec<String>, field: &mut String, start: usize| {
        fields.push(std::mem::take(field));
        let blank = fields.len() == 1 && fields[0].trim().is_empty();
        let rec = std::mem::take(fields);
        if !blank {
            out.push((start, rec));
        }
    };
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                '\n' => {
                    line += 1;
                    field.push('\n');
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.trim().is_empty() && !was_quoted => {
                field.clear();
                quoted = true;
                was_quoted = true;
            }
            '"' => {
                return Err((
                    line,
                    "a quote inside an unquoted field (quote the whole field and double the quote)"
                        .into(),
                ))
            }
            ',' => {
                fields.push(std::mem::take(&mut field));
                was_quoted = false;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                end_record(&mut fields, &mut field, start);
                line += 1;
                start = line;
                was_quoted = false;
            }
            _ if was_quoted => {
                if !c.is_whitespace() {
                    return Err((line, "text after a closing quote".into()));
                }
            }
            _ => field.push(c),
        }
    }
    if quoted {
        return Err((start, "a quoted field is never closed".into()));
    }
    if !field.is_empty() || !fields.is_empty() {
        end_record(&mut fields, &mut field, start);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::records;
    use proptest::prelude::*;

    fn rows(t: &str) -> Vec<Vec<String>> {
        records(t).unwrap().into_iter().map(|(_, r)| r).collect()
    }

    #[test]
    fn quotes_bom_crlf_and_blank_lines() {
        assert_eq!(
            rows("\u{feff}path,band,time\r\n\"a,b.tif\",red,2019\r\n\r\n\"say \"\"hi\"\".tif\",nir,2020\n"),
            vec![
                vec!["path", "band", "time"],
                vec!["a,b.tif", "red", "2019"],
                vec!["say \"hi\".tif", "nir", "2020"],
            ]
        );
        let lines: Vec<usize> = records("h\n\nx\n\"multi\nline\"\ny")
            .unwrap()
            .iter()
            .map(|r| r.0)
            .collect();
        assert_eq!(lines, vec![1, 3, 4, 6]);
        assert!(records("a,\"open\n")
            .unwrap_err()
            .1
            .contains("never closed"));
        assert!(records("a,b\"c\n").unwrap_err().1.contains("quote inside"));
        assert!(records("\"a\"b,c\n")
            .unwrap_err()
            .1
            .contains("after a closing quote"));
        assert_eq!(rows("a,,c"), vec![vec!["a", "", "c"]]);
    }

    proptest! {
        /// Fields written the RFC 4180 way (quoted when needed) read back exactly.
        #[test]
        fn round_trip(table in prop::collection::vec(prop::collection::vec("[a-z ,\"\\n.é]{0,6}", 1..4), 1..6), crlf in any::<bool>()) {
            let width = table[0].len();
            let table: Vec<Vec<String>> = table.into_iter().map(|mut r| { r.resize(width, "x".into()); r }).collect();
            let nl = if crlf { "\r\n" } else { "\n" };
            let text: String = table.iter().map(|r| {
                r.iter().map(|f| if f.contains([',', '"', '\n']) || f.trim() != f || f.is_empty() {
                    format!("\"{}\"", f.replace('"', "\"\""))
                } else { f.clone() }).collect::<Vec<_>>().join(",") + nl
            }).collect();
            let got = rows(&text);
            // Blank records (one empty field) are skipped by design.
            let want: Vec<Vec<String>> = table.into_iter().filter(|r| !(r.len() == 1 && r[0].trim().is_empty())).collect();
            prop_assert_eq!(got, want);
        }
    }
}
