//! Property tests for the location grammar (`hwbreak_linux::symbols::expr`):
//! it never panics on any input, every error points inside the input, and
//! every well-formed location parses back to what generated it.

use hwbreak_linux::symbols::expr::{parse, Root, Step};
use hwbreak_linux::symbols::SymbolError;
use proptest::prelude::*;

fn ident() -> impl Strategy<Value = String> {
    "[A-Za-z_][A-Za-z0-9_]{0,8}"
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        ident().prop_map(Step::Field),
        (0u64..1000).prop_map(Step::Index)
    ]
}

proptest! {
    #[test]
    fn never_panics_and_errors_point_inside_the_input(s in "\\PC{0,40}") {
        match parse(&s) {
            Ok(_) => {}
            Err(SymbolError::Syntax { column, .. }) => {
                prop_assert!(column >= 1 && column <= s.trim().len() + 1, "column {} for {:?}", column, s);
            }
            Err(e) => prop_assert!(false, "only syntax errors come from parsing: {e}"),
        }
    }

    #[test]
    fn bytes_from_the_grammar_alphabet_never_panic(s in "[a-z0-9_:.\\[\\]+x-]{0,30}") {
        let _ = parse(&s);
    }

    #[test]
    fn well_formed_locations_parse_to_their_parts(
        module in proptest::option::of("lib[a-z]{1,6}\\.so(\\.[0-9])?"),
        path in proptest::collection::vec(ident(), 1..4),
        steps in proptest::collection::vec(step(), 0..5),
        offset in proptest::option::of(-4096i64..4096),
        hex in any::<bool>(),
    ) {
        let mut text = String::new();
        if let Some(m) = &module {
            text.push_str(m);
            text.push(':');
        }
        text.push_str(&path.join("::"));
        for s in &steps {
            match s {
                Step::Field(f) => { text.push('.'); text.push_str(f); }
                Step::Index(i) => text.push_str(&format!("[{i}]")),
            }
        }
        if let Some(o) = offset {
            let sign = if o < 0 { '-' } else { '+' };
            if hex { text.push_str(&format!("{sign}{:#x}", o.unsigned_abs())) }
            else { text.push_str(&format!("{sign}{}", o.unsigned_abs())) }
        }
        let e = parse(&text).unwrap();
        prop_assert_eq!(e.module, module);
        prop_assert_eq!(e.root, Root::Name(path.join("::")));
        prop_assert_eq!(e.steps, steps);
        prop_assert_eq!(e.offset, offset);
    }

    #[test]
    fn raw_addresses_parse_in_hex_and_decimal(a in any::<u64>()) {
        prop_assert_eq!(parse(&format!("{a:#x}")).unwrap().root, Root::Addr(a));
        prop_assert_eq!(parse(&a.to_string()).unwrap().root, Root::Addr(a));
    }
}
