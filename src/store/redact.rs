//! Secrets never reach a message: [`redact`] removes the values of the AWS secret variables,
//! credentials in URLs (user info, presigned query parameters) and `Authorization`-style
//! fields; [`clean`] also makes a message one line. Every message built from a storage or
//! network error goes through here, and the CLI passes its final error line through it again.

/// A message fit for one line of output: secrets redacted, whitespace (newlines of XML error
/// bodies) collapsed, and capped in length.
pub fn clean(msg: &str) -> String {
    let one: String = redact(msg).split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() > 600 {
        let cut: String = one.chars().take(600).collect();
        format!("{cut}…")
    } else {
        one
    }
}

/// Remove anything that looks like a secret from a message: the values of the secret
/// environment variables (every occurrence), the user info of URLs (`scheme://user:pass@host`)
/// and the values of presigned-URL query parameters and `Authorization`-style fields (every
/// occurrence, case-insensitively).
pub fn redact(msg: &str) -> String {
    let mut out = redact_userinfo(msg);
    for var in [
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECURITY_TOKEN",
    ] {
        if let Ok(v) = std::env::var(var) {
            if v.len() >= 4 {
                out = out.replace(&v, "***");
            }
        }
    }
    for marker in [
        "x-amz-signature=",
        "x-amz-credential=",
        "x-amz-security-token=",
        "awsaccesskeyid=",
        "signature=",
        "x-amz-security-token: ",
        "authorization: ",
    ] {
        out = redact_values(&out, marker);
    }
    out
}

/// Replace the value after every occurrence of `marker` (ASCII, matched case-insensitively)
/// with `***`. A value ends at `&`, whitespace, a quote or `<`; header-style markers (ending in
/// a space) take the rest of the line.
fn redact_values(s: &str, marker: &str) -> String {
    let lower = s.to_ascii_lowercase();
    let header = marker.ends_with(' ');
    let mut out = String::with_capacity(s.len());
    let mut pos = 0;
    while let Some(i) = lower[pos..].find(marker) {
        let start = pos + i + marker.len();
        let end = s[start..]
            .find(|c: char| {
                if header {
                    c == '\n' || c == '\r'
                } else {
                    c == '&' || c.is_whitespace() || c == '"' || c == '\'' || c == '<'
                }
            })
            .map(|e| start + e)
            .unwrap_or(s.len());
        out.push_str(&s[pos..start]);
        if end > start {
            out.push_str("***");
        }
        pos = end;
    }
    out.push_str(&s[pos..]);
    out
}

/// Replace the user info of every `scheme://userinfo@host` in `s` with `***`.
fn redact_userinfo(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pos = 0;
    while let Some(i) = s[pos..].find("://") {
        let start = pos + i + 3;
        // The authority ends at the first '/', '?', '#', whitespace or quote.
        let end = s[start..]
            .find(|c: char| {
                matches!(c, '/' | '?' | '#' | '"' | '\'' | '<' | '>') || c.is_whitespace()
            })
            .map(|e| start + e)
            .unwrap_or(s.len());
        out.push_str(&s[pos..start]);
        match s[start..end].rfind('@') {
            Some(at) => {
                out.push_str("***");
                out.push_str(&s[start + at..end]);
            }
            None => out.push_str(&s[start..end]),
        }
        pos = end;
    }
    out.push_str(&s[pos..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_handles_every_occurrence() {
        let msg =
            "GET https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIA1%2F2&X-Amz-Signature=abc123 \
                   then https://b/k2?x-amz-signature=def456&X-Amz-Security-Token=tok1 and \
                   again X-Amz-Signature=ghi789\"; AWSAccessKeyId=AKIAXX&Signature=s1g<";
        let r = redact(msg);
        for secret in [
            "AKIA1", "abc123", "def456", "tok1", "ghi789", "AKIAXX", "s1g",
        ] {
            assert!(!r.contains(secret), "{secret} left in {r}");
        }
        assert_eq!(r.matches("***").count(), 7, "{r}");
        assert!(r.contains("https://b/k2?x-amz-signature=***&"));
        let hdr =
            redact("authorization: AWS4-HMAC-SHA256 Credential=AKIA/x, Signature=zz\nnext line");
        assert_eq!(hdr, "authorization: ***\nnext line");
        // Idempotent, and leaves ordinary text alone.
        assert_eq!(redact(&r), r);
        assert_eq!(redact("no secrets here"), "no secrets here");
    }

    #[test]
    fn clean_is_one_line() {
        assert_eq!(
            clean("a\n  <Error>\n<Code>x</Code>\n"),
            "a <Error> <Code>x</Code>"
        );
    }

    #[test]
    fn url_user_info_is_redacted() {
        let m = redact("storage error at http://alice:S3CRET@127.0.0.1:9000/b/k: refused; also https://tok@h/x and s3://bucket/p");
        assert!(
            !m.contains("S3CRET") && !m.contains("alice") && !m.contains("tok@"),
            "{m}"
        );
        assert!(m.contains("http://***@127.0.0.1:9000/b/k"), "{m}");
        assert!(
            m.contains("https://***@h/x") && m.contains("s3://bucket/p"),
            "{m}"
        );
        assert_eq!(redact(&m), m);
    }
}
