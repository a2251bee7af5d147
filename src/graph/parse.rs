//! The band-math language of `--expr 'ndvi=(nir-red)/(nir+red)'`.
//!
//! ```text
//! assignment := NAME '=' expr
//! expr  := or ;  or := and ('|' and)* ;  and := cmp ('&' cmp)*
//! cmp   := add (('<' | '<=' | '>' | '>=' | '==' | '!=') add)?
//! add   := mul (('+' | '-') mul)* ;  mul := unary (('*' | '/') unary)*
//! unary := ('-' | '!') unary | pow ;  pow := atom ('**' unary)?
//! atom  := NUMBER | NAME | NAME '(' expr (',' expr)* ')' | '(' expr ')'
//! ```
//! Functions: where(c,a,b) sqrt abs log exp clip(x,lo,hi) isnull notnull fillna(x,v)
//! minimum(a,b) maximum(a,b) float32(x) float64(x) (what is computed from it is computed in
//! double precision) and reductions mean/median/min/max/sum/count/std(x, DIM).

use super::{BinaryOp, UnaryOp};

/// The longest expression accepted, in bytes. Every later step (the graph, planning, the
/// evaluator) walks the expression recursively: bounds keep hostile input an error, never a
/// stack overflow.
pub const MAX_EXPR_LEN: usize = 10_000;

/// The deepest nesting of parentheses, unary operators, powers and calls accepted.
pub const MAX_NESTING: usize = 100;

/// The deepest expression tree accepted (a chain of 300 `+` is 300 deep).
pub const MAX_DEPTH: usize = 256;

/// A parse or evaluation error, pointing at the offending token. Long expressions are quoted
/// around the column only, so the message stays one readable line.
#[derive(Debug, thiserror::Error)]
#[error("in '{}' at column {col}: {msg}", excerpt(expr, *col))]
pub struct ParseError {
    /// The expression.
    pub expr: String,
    /// 1-based column.
    pub col: usize,
    /// What is wrong.
    pub msg: String,
}

/// At most about 80 characters of `expr` around 1-based column `col`, elided with `…`.
fn excerpt(expr: &str, col: usize) -> String {
    const WIDTH: usize = 80;
    let chars: Vec<char> = expr.chars().collect();
    if chars.len() <= WIDTH {
        return expr.to_string();
    }
    let at = col.saturating_sub(1).min(chars.len());
    let start = at.saturating_sub(WIDTH / 2);
    let end = (start + WIDTH).min(chars.len());
    let start = end.saturating_sub(WIDTH);
    format!(
        "{}{}{}",
        if start > 0 { "…" } else { "" },
        chars[start..end].iter().collect::<String>(),
        if end < chars.len() { "…" } else { "" }
    )
}

/// The syntax tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Ast {
    /// A number.
    Num(f64),
    /// A band or earlier result (with its position).
    Name(String, usize),
    /// Unary op.
    Unary(UnaryOp, Box<Ast>),
    /// Binary op.
    Binary(BinaryOp, Box<Ast>, Box<Ast>),
    /// Function call (name, args, position).
    Call(String, Vec<Ast>, usize),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(f64),
    Name(String),
    Op(&'static str),
    End,
}

struct Parser<'a> {
    src: &'a str,
    toks: Vec<(Tok, usize)>,
    pos: usize,
    /// Current nesting (see [`MAX_NESTING`]).
    nest: usize,
}

fn lex(src: &str) -> Result<Vec<(Tok, usize)>, ParseError> {
    let b = src.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    let ops = [
        "**", "<=", ">=", "==", "!=", "+", "-", "*", "/", "(", ")", ",", "<", ">", "&", "|", "!",
    ];
    while i < b.len() {
        let c = b[i] as char;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c.is_ascii_digit()
            || (c == '.' && i + 1 < b.len() && (b[i + 1] as char).is_ascii_digit())
        {
            let start = i;
            while i < b.len() && ((b[i] as char).is_ascii_digit() || b[i] == b'.') {
                i += 1;
            }
            if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
                let save = i;
                i += 1;
                if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
                    i += 1;
                }
                if i < b.len() && (b[i] as char).is_ascii_digit() {
                    while i < b.len() && (b[i] as char).is_ascii_digit() {
                        i += 1;
                    }
                } else {
                    i = save;
                }
            }
            let text = &src[start..i];
            let v: f64 = text.parse().map_err(|_| ParseError {
                expr: src.into(),
                col: start + 1,
                msg: format!("bad number '{text}'"),
            })?;
            out.push((Tok::Num(v), start));
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < b.len() && ((b[i] as char).is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            out.push((Tok::Name(src[start..i].to_string()), start));
            continue;
        }
        match ops.iter().find(|o| src[i..].starts_with(**o)) {
            Some(o) => {
                out.push((Tok::Op(o), i));
                i += o.len();
            }
            None => {
                // The whole character (the byte alone would misname a non-ASCII one).
                let ch = src[i..].chars().next().unwrap_or(c);
                let what = if ch.is_ascii() {
                    format!("unexpected character '{ch}'")
                } else {
                    format!(
                        "unexpected character '{ch}' (U+{:04X}); expressions use ASCII names and operators",
                        ch as u32
                    )
                };
                return Err(ParseError {
                    expr: src.into(),
                    col: src[..i].chars().count() + 1,
                    msg: what,
                });
            }
        }
    }
    out.push((Tok::End, src.len()));
    Ok(out)
}

impl<'a> Parser<'a> {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos].0
    }
    fn at(&self) -> usize {
        self.toks[self.pos].1
    }
    fn err(&self, msg: impl Into<String>) -> ParseError {
        ParseError {
            expr: self.src.into(),
            col: self.at() + 1,
            msg: msg.into(),
        }
    }
    fn eat(&mut self, op: &str) -> bool {
        if *self.peek() == Tok::Op(static_op(op)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn expect(&mut self, op: &str) -> Result<(), ParseError> {
        if self.eat(op) {
            Ok(())
        } else {
            Err(self.err(format!("expected '{op}', found {}", describe(self.peek()))))
        }
    }
    fn binary_level(
        &mut self,
        ops: &[(&str, BinaryOp)],
        next: fn(&mut Self) -> Result<Ast, ParseError>,
        once: bool,
    ) -> Result<Ast, ParseError> {
        let mut lhs = next(self)?;
        while let Some((_, op)) = ops
            .iter()
            .find(|(s, _)| *self.peek() == Tok::Op(static_op(s)))
        {
            self.pos += 1;
            let rhs = next(self)?;
            lhs = Ast::Binary(*op, Box::new(lhs), Box::new(rhs));
            if once {
                break;
            }
        }
        Ok(lhs)
    }
    fn expr(&mut self) -> Result<Ast, ParseError> {
        self.binary_level(&[("|", BinaryOp::Or)], Self::and, false)
    }
    fn and(&mut self) -> Result<Ast, ParseError> {
        self.binary_level(&[("&", BinaryOp::And)], Self::cmp, false)
    }
    fn cmp(&mut self) -> Result<Ast, ParseError> {
        self.binary_level(
            &[
                ("<=", BinaryOp::Le),
                (">=", BinaryOp::Ge),
                ("==", BinaryOp::Eq),
                ("!=", BinaryOp::Ne),
                ("<", BinaryOp::Lt),
                (">", BinaryOp::Gt),
            ],
            Self::add,
            true,
        )
    }
    fn add(&mut self) -> Result<Ast, ParseError> {
        self.binary_level(
            &[("+", BinaryOp::Add), ("-", BinaryOp::Sub)],
            Self::mul,
            false,
        )
    }
    fn mul(&mut self) -> Result<Ast, ParseError> {
        self.binary_level(
            &[("*", BinaryOp::Mul), ("/", BinaryOp::Div)],
            Self::unary,
            false,
        )
    }
    /// Run `f` one nesting level deeper, refusing past [`MAX_NESTING`]. Every parenthesis,
    /// call argument and unary operator passes through `unary` once, so counting there counts
    /// each level once.
    fn nested(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<Ast, ParseError>,
    ) -> Result<Ast, ParseError> {
        if self.nest >= MAX_NESTING {
            return Err(self.err(format!(
                "the expression nests more than {MAX_NESTING} levels deep (parentheses, unary operators, calls); simplify it or split it into several --expr"
            )));
        }
        self.nest += 1;
        let r = f(self);
        self.nest -= 1;
        r
    }
    fn unary(&mut self) -> Result<Ast, ParseError> {
        self.nested(Self::unary_inner)
    }
    fn unary_inner(&mut self) -> Result<Ast, ParseError> {
        if self.eat("-") {
            return Ok(Ast::Unary(UnaryOp::Neg, Box::new(self.unary()?)));
        }
        if self.eat("!") {
            return Ok(Ast::Unary(UnaryOp::Not, Box::new(self.unary()?)));
        }
        self.pow()
    }
    fn pow(&mut self) -> Result<Ast, ParseError> {
        let base = self.atom()?;
        if self.eat("**") {
            let e = self.unary()?;
            return Ok(Ast::Binary(BinaryOp::Pow, Box::new(base), Box::new(e)));
        }
        Ok(base)
    }
    fn atom(&mut self) -> Result<Ast, ParseError> {
        let at = self.at();
        match self.peek().clone() {
            Tok::Num(v) => {
                self.pos += 1;
                Ok(Ast::Num(v))
            }
            Tok::Name(n) => {
                self.pos += 1;
                if self.eat("(") {
                    let mut args = vec![self.expr()?];
                    while self.eat(",") {
                        args.push(self.expr()?);
                    }
                    self.expect(")")?;
                    Ok(Ast::Call(n, args, at))
                } else {
                    Ok(Ast::Name(n, at))
                }
            }
            Tok::Op("(") => {
                self.pos += 1;
                let e = self.expr()?;
                self.expect(")")?;
                Ok(e)
            }
            t => Err(self.err(format!(
                "expected a number, band name or '(', found {}",
                describe(&t)
            ))),
        }
    }
}

fn static_op(s: &str) -> &'static str {
    [
        "**", "<=", ">=", "==", "!=", "+", "-", "*", "/", "(", ")", ",", "<", ">", "&", "|", "!",
    ]
    .into_iter()
    .find(|o| *o == s)
    .unwrap_or("")
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Num(v) => format!("number {v}"),
        Tok::Name(n) => format!("'{n}'"),
        Tok::Op(o) => format!("'{o}'"),
        Tok::End => "the end of the expression".into(),
    }
}

/// Parse an expression (at most [`MAX_EXPR_LEN`] bytes, [`MAX_NESTING`] levels of nesting
/// and a tree [`MAX_DEPTH`] deep).
pub fn parse_expr(src: &str) -> Result<Ast, ParseError> {
    if src.len() > MAX_EXPR_LEN {
        return Err(ParseError {
            expr: src.into(),
            col: 1,
            msg: format!(
                "the expression is {} bytes long (at most {MAX_EXPR_LEN}); split it into several --expr",
                src.len()
            ),
        });
    }
    let toks = lex(src)?;
    let mut p = Parser {
        src,
        toks,
        pos: 0,
        nest: 0,
    };
    let e = p.expr()?;
    if *p.peek() != Tok::End {
        return Err(p.err(format!(
            "unexpected {} after a complete expression",
            describe(p.peek())
        )));
    }
    let depth = e.depth();
    if depth > MAX_DEPTH {
        return Err(ParseError {
            expr: src.into(),
            col: 1,
            msg: format!(
                "the expression is {depth} operations deep (at most {MAX_DEPTH}); split it into several --expr"
            ),
        });
    }
    Ok(e)
}

impl Ast {
    /// The depth of the tree (a number or name is 1), without recursion: a left-deep chain of
    /// thousands of terms is measured before anything walks it recursively.
    pub fn depth(&self) -> usize {
        let mut most = 0;
        let mut stack = vec![(self, 1usize)];
        while let Some((a, d)) = stack.pop() {
            most = most.max(d);
            match a {
                Ast::Num(_) | Ast::Name(..) => {}
                Ast::Unary(_, x) => stack.push((x, d + 1)),
                Ast::Binary(_, x, y) => {
                    stack.push((x, d + 1));
                    stack.push((y, d + 1));
                }
                Ast::Call(_, args, _) => stack.extend(args.iter().map(|x| (x, d + 1))),
            }
        }
        most
    }

    /// Whether the expression reads `name` (a band or an earlier result).
    pub fn mentions(&self, name: &str) -> bool {
        match self {
            Ast::Num(_) => false,
            Ast::Name(n, _) => n == name,
            Ast::Unary(_, a) => a.mentions(name),
            Ast::Binary(_, a, b) => a.mentions(name) || b.mentions(name),
            Ast::Call(_, args, _) => args.iter().any(|a| a.mentions(name)),
        }
    }
}

/// The name an expression given without `NAME=` gets (`--expr '(nir-red)/(nir+red)'`).
pub const DEFAULT_NAME: &str = "result";

/// The functions of the language, as `--help` and the unknown-function error list them.
pub const FUNCTIONS: &str = "where(cond,a,b) sqrt(x) abs(x) log(x) exp(x) clip(x,lo,hi) isnull(x) notnull(x) fillna(x,v) minimum(a,b) maximum(a,b) float32(x) float64(x) mean(x,DIM) median(x,DIM) min(x,DIM) max(x,DIM) sum(x,DIM) count(x,DIM) std(x,DIM)";

/// The operators of the language, loosest first, as `--help` lists them.
pub const OPERATORS: &str =
    "| & < <= > >= == != + - * / ** (power) unary - and ! (not), parentheses, numbers";

/// Whether `s` is a valid result name (a letter or `_`, then letters, digits, `_`).
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.chars().next().is_some_and(|c| c.is_ascii_digit())
}

/// Parse `NAME=EXPR`, or a bare `EXPR` named [`DEFAULT_NAME`] (what precedes the first `=`
/// is then not a name, as in `(nir-red)/(nir+red)` or `nir>=red`).
pub fn parse_assignment(src: &str) -> Result<(String, Ast), ParseError> {
    let named = src
        .split_once('=')
        .filter(|(n, r)| !r.starts_with('=') && valid_name(n.trim()));
    let Some((name, rhs)) = named else {
        // A single token before a lone `=` was meant as a name: say that it is not valid.
        let meant = src.split_once('=').filter(|(n, r)| {
            !r.starts_with('=')
                && !n.trim().is_empty()
                && !n.trim().contains(|c: char| "()<>!=+-*/&|, ".contains(c))
        });
        if let Some((n, _)) = meant {
            return Err(ParseError {
                expr: src.into(),
                col: 1,
                msg: format!("'{}' is not a valid result name", n.trim()),
            });
        }
        return parse_expr(src).map(|ast| (DEFAULT_NAME.to_string(), ast));
    };
    let n = name.trim();
    let off = name.len() + 1;
    let ast = parse_expr(rhs).map_err(|e| ParseError {
        expr: src.into(),
        col: e.col + off,
        msg: e.msg,
    })?;
    Ok((n.to_string(), shift(ast, off)))
}

/// Move every recorded position by `off` columns (positions then refer to the whole assignment).
fn shift(ast: Ast, off: usize) -> Ast {
    match ast {
        Ast::Num(v) => Ast::Num(v),
        Ast::Name(n, p) => Ast::Name(n, p + off),
        Ast::Unary(op, a) => Ast::Unary(op, Box::new(shift(*a, off))),
        Ast::Binary(op, a, b) => {
            Ast::Binary(op, Box::new(shift(*a, off)), Box::new(shift(*b, off)))
        }
        Ast::Call(f, args, p) => Ast::Call(
            f,
            args.into_iter().map(|a| shift(a, off)).collect(),
            p + off,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn parses_ndvi_and_points_at_errors() {
        let (n, a) = parse_assignment("ndvi=(nir-red)/(nir+red)").unwrap();
        assert_eq!(n, "ndvi");
        assert!(matches!(a, Ast::Binary(BinaryOp::Div, _, _)));
        let e = parse_assignment("ndvi=(nir-red)/(nir+").unwrap_err();
        assert_eq!(e.col, 21, "{e}");
        let e = parse_expr("nir $ red").unwrap_err();
        assert_eq!(e.col, 5);
        assert!(parse_expr("1 + 2 * -x ** 2").is_ok());
        assert!(parse_expr("where(nir > red, 1, 0)").is_ok());
    }

    #[test]
    fn unnamed_expressions_are_named_result() {
        for src in [
            "(nir-red)/(nir+red)",
            "nir>=red",
            "nir==red",
            "where(nir<=red, 1, 0)",
        ] {
            let (n, _) = parse_assignment(src).unwrap_or_else(|e| panic!("{src}: {e}"));
            assert_eq!(n, DEFAULT_NAME, "{src}");
        }
        let (n, a) = parse_assignment(" hi = nir>=red").unwrap();
        assert_eq!(n, "hi");
        assert!(matches!(a, Ast::Binary(BinaryOp::Ge, _, _)), "{a:?}");
        let e = parse_assignment("1ndvi=nir").unwrap_err();
        assert!(e.msg.contains("'1ndvi' is not a valid result name"), "{e}");
        // Positions point into the whole text either way.
        let e = parse_assignment("(nir-red)/(nir+").unwrap_err();
        assert_eq!(e.col, 16, "{e}");
    }

    #[test]
    fn hostile_expressions_are_errors_not_overflows() {
        let long_sum = vec!["nir"; 2000].join("+");
        let deep_parens = format!("{}nir{}", "(".repeat(3000), ")".repeat(3000));
        let minus = format!("{}nir", "-".repeat(5000));
        let calls = format!("{}nir{}", "sqrt(".repeat(1500), ")".repeat(1500));
        let huge = format!("nir{}", "+1".repeat(6000));
        for (src, says) in [
            (&long_sum, "deep"),
            (&deep_parens, "nests more than"),
            (&minus, "nests more than"),
            (&calls, "nests more than"),
            (&huge, "bytes long"),
        ] {
            let e = parse_expr(src).unwrap_err();
            assert!(e.msg.contains(says), "{}", e.msg);
            assert!(e.to_string().len() < 400, "{e}");
        }
        // At the limits: accepted.
        let ok = format!(
            "{}nir{}",
            "(".repeat(MAX_NESTING - 1),
            ")".repeat(MAX_NESTING - 1)
        );
        assert!(parse_expr(&ok).is_ok());
        assert!(parse_expr(&vec!["nir"; MAX_DEPTH].join("+")).is_ok());
    }

    #[test]
    fn non_ascii_is_named_whole() {
        let e = parse_expr("nir × red").unwrap_err();
        assert!(e.msg.contains("'×' (U+00D7)"), "{}", e.msg);
        assert_eq!(e.col, 5);
    }

    proptest::proptest! {
        /// Any text is an expression or an error, never a panic or an overflow.
        #[test]
        fn parse_never_panics(s in "\\PC{0,200}") {
            let _ = parse_assignment(&s);
            let _ = parse_expr(&s);
        }

        /// Text made of the language's own tokens, in any order and nesting.
        #[test]
        fn token_soup_never_panics(toks in proptest::collection::vec(
            proptest::sample::select(vec!["nir", "red", "1.5e3", "(", ")", "+", "-", "*", "/", "**",
                "<=", "==", "!", "&", "|", ",", "where(", "sqrt(", "clip(", "mean(", "float64("]),
            0..400)) {
            let _ = parse_expr(&toks.concat());
        }
    }
}
