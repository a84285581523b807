//! Tokenizer and recursive-descent parser for Calico's selector language.
//!
//! The accepted language is Calico's (libcalico-go `selector/tokenizer` and `parser`):
//! whitespace is only space and tab; label keys are runs of `[A-Za-z0-9_./-]` up to 512 bytes;
//! string literals use `'` or `"` with no escapes; `has(`, `all(` and `global(` are written without
//! a space before the parenthesis; the word operators (`in`, `not in`, `contains`, `starts with`,
//! `ends with`) are recognised only right after a label and must end at a word boundary
//! (`notin` and `startswith` are accepted, as in Calico); a set literal may end with a comma.
//! Beyond Calico: parentheses may nest at most [`MAX_NESTING`] deep, so hostile input cannot
//! exhaust the stack.

use std::collections::BTreeSet;

use crate::ast::{Expr, MAX_LABEL_LENGTH, is_label_char};

/// Deepest parenthesis nesting accepted.
pub const MAX_NESTING: usize = 128;

/// Why a selector string failed to parse. Positions are byte offsets into the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The input had something other than what the grammar allows at this point.
    #[error("selector: at byte {position}: expected {expected}, found {found}")]
    Unexpected {
        /// Byte offset of the offending input.
        position: usize,
        /// What the grammar allows here.
        expected: &'static str,
        /// What was there instead.
        found: String,
    },
    /// A quote opened a string that never closes.
    #[error("selector: at byte {position}: unterminated string literal (opened with {quote})")]
    UnterminatedString {
        /// Byte offset of the opening quote.
        position: usize,
        /// The opening quote character.
        quote: char,
    },
    /// A label key is longer than Calico allows.
    #[error(
        "selector: at byte {position}: label key is {length} bytes, longer than {MAX_LABEL_LENGTH}"
    )]
    LabelTooLong {
        /// Byte offset of the key.
        position: usize,
        /// Its length in bytes.
        length: usize,
    },
    /// Parentheses nest deeper than [`MAX_NESTING`].
    #[error("selector: at byte {position}: parentheses nested deeper than {MAX_NESTING}")]
    TooDeep {
        /// Byte offset of the parenthesis that went too deep.
        position: usize,
    },
}

impl ParseError {
    /// Byte offset in the input where the error was detected.
    pub fn position(&self) -> usize {
        match self {
            ParseError::Unexpected { position, .. }
            | ParseError::UnterminatedString { position, .. }
            | ParseError::LabelTooLong { position, .. }
            | ParseError::TooDeep { position } => *position,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Label(String),
    Str(String),
    LBrace,
    RBrace,
    Comma,
    Eq,
    Ne,
    In,
    NotIn,
    Not,
    Contains,
    StartsWith,
    EndsWith,
    All,
    Global,
    Has(String),
    LParen,
    RParen,
    And,
    Or,
    Eof,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Label(l) => format!("label {l:?}"),
            Tok::Str(s) => format!("string {s:?}"),
            Tok::LBrace => "'{'".into(),
            Tok::RBrace => "'}'".into(),
            Tok::Comma => "','".into(),
            Tok::Eq => "'=='".into(),
            Tok::Ne => "'!='".into(),
            Tok::In => "'in'".into(),
            Tok::NotIn => "'not in'".into(),
            Tok::Not => "'!'".into(),
            Tok::Contains => "'contains'".into(),
            Tok::StartsWith => "'starts with'".into(),
            Tok::EndsWith => "'ends with'".into(),
            Tok::All => "'all()'".into(),
            Tok::Global => "'global()'".into(),
            Tok::Has(k) => format!("'has({k})'"),
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
            Tok::And => "'&&'".into(),
            Tok::Or => "'||'".into(),
            Tok::Eof => "end of input".into(),
        }
    }
}

struct Lexer<'a> {
    input: &'a str,
    pos: usize,
}

fn found_at(input: &str, pos: usize) -> String {
    match input[pos..].chars().next() {
        Some(c) => format!("{c:?}"),
        None => "end of input".into(),
    }
}

impl<'a> Lexer<'a> {
    fn rest(&self) -> &'a str {
        &self.input[self.pos..]
    }

    fn skip_ws(&mut self) {
        while matches!(self.rest().as_bytes().first(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    fn unexpected(&self, expected: &'static str) -> ParseError {
        ParseError::Unexpected {
            position: self.pos,
            expected,
            found: found_at(self.input, self.pos),
        }
    }

    /// Consumes `word` if it is next and followed by a word boundary.
    fn eat_word(&mut self, word: &str) -> bool {
        if let Some(after) = self.rest().strip_prefix(word)
            && !after.bytes().next().is_some_and(is_label_char)
        {
            self.pos += word.len();
            return true;
        }
        false
    }

    /// Consumes `first` `second` (any spaces between) if next and followed by a word boundary.
    fn eat_two_words(&mut self, first: &str, second: &str) -> bool {
        let start = self.pos;
        if self.rest().starts_with(first) {
            self.pos += first.len();
            self.skip_ws();
            if self.eat_word(second) {
                return true;
            }
        }
        self.pos = start;
        false
    }

    fn identifier(&mut self) -> Result<String, ParseError> {
        let start = self.pos;
        let len = self
            .rest()
            .bytes()
            .take_while(|&c| is_label_char(c))
            .count();
        if len == 0 {
            return Err(self.unexpected("a label key"));
        }
        if len > MAX_LABEL_LENGTH {
            return Err(ParseError::LabelTooLong {
                position: start,
                length: len,
            });
        }
        self.pos += len;
        Ok(self.input[start..self.pos].to_string())
    }

    /// After `name(` has been consumed: optional spaces then `)`.
    fn close_call(&mut self, expected: &'static str) -> Result<(), ParseError> {
        self.skip_ws();
        if self.rest().starts_with(')') {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.unexpected(expected))
        }
    }

    fn tokens(mut self) -> Result<Vec<(usize, Tok)>, ParseError> {
        let mut out: Vec<(usize, Tok)> = Vec::new();
        loop {
            self.skip_ws();
            let start = self.pos;
            let Some(&c) = self.rest().as_bytes().first() else {
                out.push((start, Tok::Eof));
                return Ok(out);
            };
            let after_label = matches!(out.last(), Some((_, Tok::Label(_))));
            let tok = match c {
                b'(' | b')' | b'{' | b'}' | b',' => {
                    self.pos += 1;
                    match c {
                        b'(' => Tok::LParen,
                        b')' => Tok::RParen,
                        b'{' => Tok::LBrace,
                        b'}' => Tok::RBrace,
                        _ => Tok::Comma,
                    }
                }
                b'"' | b'\'' => {
                    let body = &self.rest()[1..];
                    let Some(end) = body.find(c as char) else {
                        return Err(ParseError::UnterminatedString {
                            position: start,
                            quote: c as char,
                        });
                    };
                    let value = body[..end].to_string();
                    self.pos += end + 2;
                    Tok::Str(value)
                }
                b'=' => {
                    if !self.rest().starts_with("==") {
                        return Err(self.unexpected("'=='"));
                    }
                    self.pos += 2;
                    Tok::Eq
                }
                b'!' => {
                    if self.rest().starts_with("!=") {
                        self.pos += 2;
                        Tok::Ne
                    } else {
                        self.pos += 1;
                        Tok::Not
                    }
                }
                b'&' => {
                    if !self.rest().starts_with("&&") {
                        return Err(self.unexpected("'&&'"));
                    }
                    self.pos += 2;
                    Tok::And
                }
                b'|' => {
                    if !self.rest().starts_with("||") {
                        return Err(self.unexpected("'||'"));
                    }
                    self.pos += 2;
                    Tok::Or
                }
                _ if after_label => {
                    if self.eat_word("contains") {
                        Tok::Contains
                    } else if self.eat_two_words("starts", "with") {
                        Tok::StartsWith
                    } else if self.eat_two_words("ends", "with") {
                        Tok::EndsWith
                    } else if self.eat_two_words("not", "in") {
                        Tok::NotIn
                    } else if self.eat_word("in") {
                        Tok::In
                    } else {
                        return Err(self.unexpected(
                            "an operator (==, !=, in, not in, contains, starts with, ends with)",
                        ));
                    }
                }
                _ => {
                    if self.rest().starts_with("has(") {
                        self.pos += 4;
                        self.skip_ws();
                        let key = self.identifier()?;
                        self.close_call("')' closing has(")?;
                        Tok::Has(key)
                    } else if self.rest().starts_with("all(") {
                        self.pos += 4;
                        self.close_call("')' closing all(")?;
                        Tok::All
                    } else if self.rest().starts_with("global(") {
                        self.pos += 7;
                        self.close_call("')' closing global(")?;
                        Tok::Global
                    } else {
                        Tok::Label(self.identifier().map_err(|e| match e {
                            ParseError::Unexpected {
                                position, found, ..
                            } => ParseError::Unexpected {
                                position,
                                expected: "a label key, has(), all(), global(), '!' or '('",
                                found,
                            },
                            other => other,
                        })?)
                    }
                }
            };
            out.push((start, tok));
        }
    }
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    next: usize,
}

impl Parser {
    fn peek(&self) -> &Tok {
        // The token list always ends with Eof and `next` never passes it.
        &self.toks[self.next].1
    }

    fn pos(&self) -> usize {
        self.toks[self.next].0
    }

    fn bump(&mut self) -> Tok {
        let tok = self.toks[self.next].1.clone();
        if !matches!(tok, Tok::Eof) {
            self.next += 1;
        }
        tok
    }

    fn unexpected(&self, expected: &'static str) -> ParseError {
        ParseError::Unexpected {
            position: self.pos(),
            expected,
            found: self.peek().describe(),
        }
    }

    fn or_expr(&mut self, depth: usize) -> Result<Expr, ParseError> {
        let mut terms = vec![self.and_expr(depth)?];
        while matches!(self.peek(), Tok::Or) {
            self.bump();
            terms.push(self.and_expr(depth)?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Expr::Or(terms)
        })
    }

    fn and_expr(&mut self, depth: usize) -> Result<Expr, ParseError> {
        let mut terms = vec![self.operation(depth)?];
        while matches!(self.peek(), Tok::And) {
            self.bump();
            terms.push(self.operation(depth)?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Expr::And(terms)
        })
    }

    fn string(&mut self) -> Result<String, ParseError> {
        match self.peek() {
            Tok::Str(_) => match self.bump() {
                Tok::Str(s) => Ok(s),
                _ => Err(self.unexpected("a quoted string")),
            },
            _ => Err(self.unexpected("a quoted string")),
        }
    }

    fn set_literal(&mut self) -> Result<BTreeSet<String>, ParseError> {
        if !matches!(self.peek(), Tok::LBrace) {
            return Err(self.unexpected("'{' opening a set of strings"));
        }
        self.bump();
        let mut values = BTreeSet::new();
        while let Tok::Str(_) = self.peek() {
            values.insert(self.string()?);
            if matches!(self.peek(), Tok::Comma) {
                self.bump();
            } else {
                break;
            }
        }
        if !matches!(self.peek(), Tok::RBrace) {
            return Err(self.unexpected("a quoted string, ',' or '}'"));
        }
        self.bump();
        Ok(values)
    }

    fn operation(&mut self, depth: usize) -> Result<Expr, ParseError> {
        let mut negated = false;
        while matches!(self.peek(), Tok::Not) {
            self.bump();
            negated = !negated;
        }
        let expr = match self.peek().clone() {
            Tok::Has(key) => {
                self.bump();
                Expr::Has(key)
            }
            Tok::All => {
                self.bump();
                Expr::All
            }
            Tok::Global => {
                self.bump();
                Expr::Global
            }
            Tok::Label(key) => {
                self.bump();
                match self.peek() {
                    Tok::Eq => {
                        self.bump();
                        Expr::Eq(key, self.string()?)
                    }
                    Tok::Ne => {
                        self.bump();
                        Expr::Ne(key, self.string()?)
                    }
                    Tok::Contains => {
                        self.bump();
                        Expr::Contains(key, self.string()?)
                    }
                    Tok::StartsWith => {
                        self.bump();
                        Expr::StartsWith(key, self.string()?)
                    }
                    Tok::EndsWith => {
                        self.bump();
                        Expr::EndsWith(key, self.string()?)
                    }
                    Tok::In => {
                        self.bump();
                        Expr::In(key, self.set_literal()?)
                    }
                    Tok::NotIn => {
                        self.bump();
                        Expr::NotIn(key, self.set_literal()?)
                    }
                    _ => {
                        return Err(self.unexpected(
                            "an operator (==, !=, in, not in, contains, starts with, ends with)",
                        ));
                    }
                }
            }
            Tok::LParen => {
                if depth >= MAX_NESTING {
                    return Err(ParseError::TooDeep {
                        position: self.pos(),
                    });
                }
                self.bump();
                let inner = self.or_expr(depth + 1)?;
                if !matches!(self.peek(), Tok::RParen) {
                    return Err(self.unexpected("'&&', '||' or ')'"));
                }
                self.bump();
                inner
            }
            _ => {
                return Err(self.unexpected("a label key, has(), all(), global(), '!' or '('"));
            }
        };
        Ok(if negated {
            Expr::Not(Box::new(expr))
        } else {
            expr
        })
    }
}

/// Parses selector text. Empty (or all-whitespace) input is `all()`, as in Calico.
pub fn parse(input: &str) -> Result<Expr, ParseError> {
    let toks = Lexer { input, pos: 0 }.tokens()?;
    let mut parser = Parser { toks, next: 0 };
    if matches!(parser.peek(), Tok::Eof) {
        return Ok(Expr::All);
    }
    let expr = parser.or_expr(0)?;
    if !matches!(parser.peek(), Tok::Eof) {
        return Err(parser.unexpected("'&&', '||' or end of input"));
    }
    Ok(expr)
}
