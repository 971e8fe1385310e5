//! starlark-go accepts tabs where starlark-rust does not.

/// Starlark source as starlark-go reads it: a tab outside strings is
/// blank space (starlark-rust refuses tabs; public packages indent with
/// them). In a line's indentation a tab counts as the spaces to the next
/// multiple of 8; elsewhere as one space. Strings keep their tabs.
pub fn expand_indent_tabs(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains('\t') {
        return text.into();
    }
    #[derive(PartialEq)]
    enum S {
        Code,
        Comment,
        Single(char),
        Triple(char),
    }
    let mut out = String::with_capacity(text.len() + 64);
    let mut state = S::Code;
    let mut col = 0usize;
    let mut indenting = true;
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let triple_at = |q: char| {
            chars
                .get(i..i + 3)
                .is_some_and(|w| w.iter().all(|x| *x == q))
        };
        match state {
            S::Code => match c {
                '\t' => {
                    let n = if indenting { 8 - col % 8 } else { 1 };
                    out.extend(std::iter::repeat_n(' ', n));
                    col += n;
                    i += 1;
                    continue;
                }
                '#' => state = S::Comment,
                '"' | '\'' if triple_at(c) => {
                    out.extend([c, c, c]);
                    state = S::Triple(c);
                    indenting = false;
                    col += 3;
                    i += 3;
                    continue;
                }
                '"' | '\'' => state = S::Single(c),
                _ => {}
            },
            S::Comment => {
                if c == '\n' {
                    state = S::Code;
                }
            }
            S::Single(q) => {
                if c == '\\' && i + 1 < chars.len() {
                    out.push(c);
                    out.push(chars[i + 1]);
                    i += 2;
                    col += 2;
                    continue;
                }
                if c == q || c == '\n' {
                    state = S::Code;
                }
            }
            S::Triple(q) => {
                if c == '\\' && i + 1 < chars.len() {
                    out.push(c);
                    out.push(chars[i + 1]);
                    i += 2;
                    continue;
                }
                if triple_at(q) {
                    out.extend([q, q, q]);
                    state = S::Code;
                    i += 3;
                    continue;
                }
            }
        }
        out.push(c);
        if c == '\n' {
            col = 0;
            indenting = state != S::Triple('"') && state != S::Triple('\'');
        } else {
            col += 1;
            if c != ' ' {
                indenting = false;
            }
        }
        i += 1;
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::expand_indent_tabs;

    #[test]
    fn tabs_are_blank_space_outside_strings() {
        let src = "def f():\n\tx = {\n\t\t1: 2,\t\t\n\t}\n\treturn \"a\\tb\tc\" # \tcomment\n";
        let out = expand_indent_tabs(src);
        assert_eq!(
            out,
            "def f():\n        x = {\n                1: 2,  \n        }\n        return \"a\\tb\tc\" # \tcomment\n"
        );
        let triple = "x = \"\"\"\n\tkept\n\"\"\"\n\ty = 1\n";
        assert_eq!(
            expand_indent_tabs(triple),
            "x = \"\"\"\n\tkept\n\"\"\"\n        y = 1\n"
        );
        assert!(matches!(
            expand_indent_tabs("no tabs"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
