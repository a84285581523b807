//! Calico's bordered table, as its tools print them (Go's tablewriter, as `calicoctl node
//! status`, `calicoctl ipam show` and Felix's health endpoints use it): `+---+` borders, headers
//! centred (an odd remainder of padding goes to the right), cells left-aligned unless a column
//! is marked right-aligned. The one renderer of this layout: calicoctl's tables and
//! calico-node's health bodies all go through [`Table::render`].

/// A table: headers, which columns are right-aligned, and rows of cells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub headers: Vec<String>,
    /// Columns whose cells are right-aligned (one flag per header).
    pub right: Vec<bool>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table with these headers, every column left-aligned.
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            right: vec![false; headers.len()],
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells print empty, cells beyond the headers are ignored.
    pub fn push<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    /// The table as text, every line (borders included) ending in a newline.
    pub fn render(&self) -> String {
        let n = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(n) {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        let mut border = String::from("+");
        for w in &widths {
            border.push_str(&"-".repeat(w + 2));
            border.push('+');
        }
        border.push('\n');
        let mut out = border.clone();
        out.push('|');
        for (h, w) in self.headers.iter().zip(&widths) {
            let pad = w - h.chars().count();
            let left = pad / 2;
            out.push_str(&format!(
                " {}{h}{} |",
                " ".repeat(left),
                " ".repeat(pad - left)
            ));
        }
        out.push('\n');
        out.push_str(&border);
        for r in &self.rows {
            out.push('|');
            for (i, width) in widths.iter().enumerate() {
                let c = r.get(i).map(String::as_str).unwrap_or("");
                if self.right.get(i).copied().unwrap_or(false) {
                    out.push_str(&format!(" {c:>width$} |"));
                } else {
                    out.push_str(&format!(" {c:<width$} |"));
                }
            }
            out.push('\n');
        }
        out.push_str(&border);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_centred_cells_aligned_as_calico_prints_them() {
        let mut t = Table::new(&["NAME", "SIZE", "X"]);
        t.right[1] = true;
        t.push(["long-name", "7", "odd"]);
        // `NAME` gets 5 spaces of padding: 2 left, 3 right; `SIZE` right-aligns its cells.
        let want = "\
+-----------+------+-----+
|   NAME    | SIZE |  X  |
+-----------+------+-----+
| long-name |    7 | odd |
+-----------+------+-----+
";
        assert_eq!(t.render(), want);
    }

    #[test]
    fn short_rows_print_empty_cells_and_widths_count_characters() {
        let mut t = Table::new(&["A", "B"]);
        t.push(["é"]);
        assert_eq!(
            t.render(),
            "+---+---+\n| A | B |\n+---+---+\n| é |   |\n+---+---+\n"
        );
    }
}
