//! One line for an error and its causes, for messages that must fit one line (a CNI error's
//! `msg`, calicoctl's and the datastore's reasons).

/// `e` and its sources, `: `-joined; a source whose text the line already holds (an error that
/// prints its cause itself) is not repeated.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        let t = src.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = src.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Middle);

    #[derive(Debug, thiserror::Error)]
    #[error("middle: {0}")]
    struct Middle(#[source] std::io::Error);

    #[test]
    fn sources_follow_once_each() {
        let e = Outer(Middle(std::io::Error::other("inner")));
        // `middle` prints its cause itself: `inner` is not repeated.
        assert_eq!(error_chain(&e), "outer: middle: inner");
    }
}
