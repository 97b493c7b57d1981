use super::*;
use crate::protocol::json::{decode_string, string_is};

/// One realistic command per type, as a backend sends them.
pub(crate) const SAMPLES: [(CommandType, &str); 12] = [
    (
        CommandType::Aim,
        r#"{"type":"AIM","unit":"MS500-0001","id":101,"model_id":42,"link":"https://models.example.com/yolo-42.bin","md5":"9e107d9d372bb6826bd81d3542a419d6"}"#,
    ),
    (
        CommandType::Fmw,
        r#"{"type":"FMW","unit":"MS500-0001","id":"fw-7","firmware_id":"2.4.1","link":"https://fw.example.com/ms500-2.4.1.bin","md5":"E4D909C290D0FB1CA068FFADDF22CBD0"}"#,
    ),
    (
        CommandType::App,
        r#"{"type":"APP","unit":"site3:cam_2.a","application_id":7,"link":"https://apps.example.com/counter-7.tar","md5":"d41d8cd98f00b204e9800998ecf8427e"}"#,
    ),
    (
        CommandType::Cdn,
        r#"{"type":"CDN","unit":"MS500-0001","coordinates":[[0,0],[1920,0],[1920,1080],[0,1080]]}"#,
    ),
    (
        CommandType::Cfg,
        r#"{"type":"CFG","unit":"MS500-0001","configs":{"fps":15,"resolution":"1920x1080","night_mode":false}}"#,
    ),
    (
        CommandType::Cts,
        r#"{"type":"CTS","unit":"MS500-0001","cs_exposure":120,"cs_gain":2.5}"#,
    ),
    (
        CommandType::Wfi,
        r#"{"type":"WFI","unit":"MS500-0001","wifi_enabled":true,"wifi_ssid":"plant-4","wifi_password":"correct horse"}"#,
    ),
    (
        CommandType::Scs,
        r#"{"type":"SCS","unit":"MS500-0001","id":5}"#,
    ),
    (
        CommandType::Uds,
        r#"{"type":"UDS","unit":"MS500-0001","settings":{"timezone":"Europe/Berlin","ntp":"pool.ntp.org"}}"#,
    ),
    (
        CommandType::Frs,
        r#"{"type":"FRS","unit":"MS500-0001","reset_level":2}"#,
    ),
    (CommandType::Img, r#"{"type":"IMG","unit":"MS500-0001"}"#),
    (
        CommandType::Rsr,
        r#"{"type":"RSR","unit":"MS500-0001","seq":1234}"#,
    ),
];

fn accept(input: &str) -> Command {
    match validate(input.as_bytes(), true) {
        Ok(command) => command,
        Err(rejection) => panic!("{input} rejected: {rejection}"),
    }
}

fn reject(input: &[u8]) -> Rejection {
    match validate(input, true) {
        Ok(command) => panic!("{:?} accepted: {command:?}", String::from_utf8_lossy(input)),
        Err(rejection) => rejection,
    }
}

fn reason(input: &str) -> String {
    reject(input.as_bytes()).reason
}

#[test]
fn empty_and_non_json_input() {
    let cases: [(&[u8], &str); 7] = [
        (b"", "invalid JSON: no value"),
        (b" \n", "invalid JSON: no value"),
        (
            br#"{"type":"IMG","#,
            "invalid JSON: unexpected end of input",
        ),
        (
            br#"{"type" "IMG"}"#,
            "invalid JSON: expected ':' after object key",
        ),
        (
            br#"{} {}"#,
            "invalid JSON: unexpected bytes after the value",
        ),
        (
            b"{\"type\":\"IMG\",\"unit\":\"\xFF\"}",
            "invalid JSON: invalid UTF-8 in string",
        ),
        (
            b"{\"type\":\"IMG\",\0\"unit\":\"a\"}",
            "invalid JSON: NUL byte",
        ),
    ];
    for (input, expected) in cases {
        let rejection = reject(input);
        assert_eq!(rejection.reason, expected, "{input:?}");
        assert_eq!(
            (rejection.kind, rejection.unit, rejection.id),
            (None, None, None)
        );
    }
    let deep = format!(
        r#"{{"type":"IMG","unit":"a","x":{}{}}}"#,
        "[".repeat(128),
        "]".repeat(128)
    );
    assert_eq!(reason(&deep), "invalid JSON: nesting deeper than 128");
}

#[test]
fn not_an_object() {
    for input in ["[1]", "\"IMG\"", "42", "null", "true", " [] "] {
        let rejection = reject(input.as_bytes());
        assert_eq!(rejection.reason, "command is not a JSON object", "{input}");
        assert_eq!(
            (rejection.kind, rejection.unit, rejection.id),
            (None, None, None)
        );
    }
}

#[test]
fn every_type_accepted() {
    for (kind, sample) in SAMPLES {
        for check_fields in [true, false] {
            let command = validate(sample.as_bytes(), check_fields).expect(sample);
            assert_eq!(command.kind, kind);
            assert_eq!(command.payload, sample.as_bytes());
        }
    }
    let units: Vec<String> = SAMPLES.iter().map(|(_, s)| accept(s).unit).collect();
    assert!(units
        .iter()
        .all(|u| u == "MS500-0001" || u == "site3:cam_2.a"));
}

#[test]
fn command_type_names() {
    assert_eq!(CommandType::ALL.len(), SAMPLES.len());
    for (kind, (sample_kind, _)) in CommandType::ALL.into_iter().zip(SAMPLES) {
        assert_eq!(kind, sample_kind);
        assert_eq!(CommandType::parse(kind.as_str()), Some(kind));
        assert_eq!(kind.to_string(), kind.as_str());
        assert_eq!(
            kind.wants_reply(),
            matches!(kind, CommandType::Scs | CommandType::Uds)
        );
    }
    for name in ["aim", "Aim", " AIM", "AIMX", ""] {
        assert_eq!(CommandType::parse(name), None, "{name:?}");
    }
}

#[test]
fn type_field() {
    assert_eq!(reason(r#"{"unit":"a"}"#), r#"missing field "type""#);
    assert_eq!(
        reason(r#"{"type":5,"unit":"a"}"#),
        r#"field "type" must be a string"#
    );
    assert_eq!(
        reason(r#"{"type":null,"unit":"a"}"#),
        r#"field "type" must be a string"#
    );
    assert_eq!(
        reason(r#"{"type":["AIM"],"unit":"a"}"#),
        r#"field "type" must be a string"#
    );
    assert_eq!(
        reason(r#"{"type":"XYZ","unit":"a"}"#),
        r#"unknown type "XYZ""#
    );
    assert_eq!(
        reason(r#"{"type":"aim","unit":"a"}"#),
        r#"unknown type "aim""#
    );
    assert_eq!(
        reason(r#"{"type":"A\u0007\"","unit":"a"}"#),
        r#"unknown type "A\u{7}\"""#
    );
    assert_eq!(
        reason(r#"{"type":"\u0041IM","unit":"a","model_id":1}"#),
        r#"missing field "link""#
    );
    assert_eq!(
        reason(r#"{"type":"\ud800","unit":"a"}"#),
        r#"field "type" contains an unpaired surrogate escape"#
    );
}

#[test]
fn long_values_are_cut_in_reasons() {
    let long = "é".repeat(100);
    let expected = format!("unknown type \"{}…\"", "é".repeat(64));
    assert_eq!(
        reason(&format!(r#"{{"type":"{long}","unit":"a"}}"#)),
        expected
    );
    let exact = "X".repeat(64);
    assert_eq!(
        reason(&format!(r#"{{"type":"{exact}","unit":"a"}}"#)),
        format!("unknown type \"{exact}\"")
    );
    let unit = format!("{}/", "u".repeat(200));
    assert_eq!(
        reason(&format!(r#"{{"type":"IMG","unit":"{unit}"}}"#)),
        format!("unit \"{}…\" contains '/'", "u".repeat(64))
    );
}

#[test]
fn unit_field() {
    let cases = [
        (r#"{"type":"IMG"}"#, r#"missing field "unit""#),
        (
            r#"{"type":"IMG","unit":5}"#,
            r#"field "unit" must be a string"#,
        ),
        (
            r#"{"type":"IMG","unit":["a"]}"#,
            r#"field "unit" must be a string"#,
        ),
        (r#"{"type":"IMG","unit":""}"#, "unit is empty"),
        (
            r#"{"type":"IMG","unit":"a/b"}"#,
            r#"unit "a/b" contains '/'"#,
        ),
        (
            r#"{"type":"IMG","unit":"a\/b"}"#,
            r#"unit "a/b" contains '/'"#,
        ),
        (r#"{"type":"IMG","unit":"a+"}"#, r#"unit "a+" contains '+'"#),
        (
            r##"{"type":"IMG","unit":"#"}"##,
            r##"unit "#" contains '#'"##,
        ),
        (
            r#"{"type":"IMG","unit":"a b/c"}"#,
            r#"unit "a b/c" contains ' '"#,
        ),
        (
            r#"{"type":"IMG","unit":"a'b"}"#,
            r#"unit "a'b" contains '\''"#,
        ),
        (
            r#"{"type":"IMG","unit":"a\"b"}"#,
            r#"unit "a\"b" contains '"'"#,
        ),
        (
            r#"{"type":"IMG","unit":"a\\b"}"#,
            r#"unit "a\\b" contains '\\'"#,
        ),
        (
            r#"{"type":"IMG","unit":"a\u0007"}"#,
            r#"unit "a\u{7}" contains a control character"#,
        ),
        (
            r#"{"type":"IMG","unit":"a\tb"}"#,
            r#"unit "a\tb" contains a control character"#,
        ),
        (
            r#"{"type":"IMG","unit":"a\u007f"}"#,
            r#"unit "a\u{7f}" contains a control character"#,
        ),
        (
            r#"{"type":"IMG","unit":"caméra"}"#,
            r#"unit "caméra" contains a non-ASCII character"#,
        ),
        (
            r#"{"type":"IMG","unit":"\ud83d\ude00"}"#,
            r#"unit "😀" contains a non-ASCII character"#,
        ),
        (
            r#"{"type":"IMG","unit":"\udc00"}"#,
            r#"field "unit" contains an unpaired surrogate escape"#,
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(reason(input), expected, "{input}");
    }
}

#[test]
fn unit_lengths() {
    for len in [1, 2, 127, 128] {
        let unit = "u".repeat(len);
        assert_eq!(valid_unit(&unit), Ok(()));
        assert_eq!(
            accept(&format!(r#"{{"type":"IMG","unit":"{unit}"}}"#)).unit,
            unit
        );
    }
    let long = "u".repeat(129);
    assert_eq!(
        valid_unit(&long),
        Err("unit is longer than 128 characters".to_owned())
    );
    assert_eq!(
        reason(&format!(r#"{{"type":"IMG","unit":"{long}"}}"#)),
        "unit is longer than 128 characters"
    );
    assert_eq!(valid_unit(""), Err("unit is empty".to_owned()));
}

#[test]
fn unit_allowed_characters() {
    let all = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-";
    assert_eq!(valid_unit(all), Ok(()));
    for b in 0u8..=0x7F {
        let c = char::from(b);
        if all.contains(c) {
            continue;
        }
        let err = valid_unit(&format!("a{c}")).expect_err("forbidden character");
        assert!(err.starts_with("unit \"a"), "{err}");
        if b < 0x20 || b == 0x7F {
            assert!(err.ends_with("contains a control character"), "{err}");
        } else {
            assert!(err.ends_with(&format!("contains {c:?}")), "{err}");
        }
    }
    assert_eq!(
        valid_unit("ü"),
        Err(r#"unit "ü" contains a non-ASCII character"#.to_owned())
    );
    assert_eq!(
        valid_unit("a\u{85}"),
        Err(r#"unit "a\u{85}" contains a non-ASCII character"#.to_owned())
    );
}

#[test]
fn duplicate_fields() {
    let cases = [
        (
            r#"{"type":"IMG","unit":"a","unit":"b"}"#,
            r#"duplicate field "unit""#,
        ),
        (
            r#"{"type":"IMG","type":"IMG","unit":"a"}"#,
            r#"duplicate field "type""#,
        ),
        (
            r#"{"type":"IMG","unit":"a","x":1,"y":2,"x":3}"#,
            r#"duplicate field "x""#,
        ),
        (
            r#"{"type":"IMG","unit":"a","\u0078":1,"x":2}"#,
            r#"duplicate field "x""#,
        ),
        (
            r#"{"type":"IMG","unit":"a","id":1,"id":1}"#,
            r#"duplicate field "id""#,
        ),
        // Duplicates come before the field rules.
        (
            r#"{"type":"AIM","unit":"a","unit":"a"}"#,
            r#"duplicate field "unit""#,
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(reason(input), expected, "{input}");
        assert_eq!(
            validate(input.as_bytes(), false).map_err(|r| r.reason),
            Err(expected.to_owned())
        );
    }
    // The first occurrence of type and unit is the one read.
    let rejection = reject(br#"{"type":"IMG","unit":"first","unit":"second"}"#);
    assert_eq!(rejection.unit.as_deref(), Some("first"));
    // Only the top level counts.
    accept(r#"{"type":"CFG","unit":"a","configs":{"k":1,"k":2},"x":[{"a":1},{"a":1}]}"#);
    // Many fields take the hash-set path.
    let many: String = (0..40).map(|i| format!(r#","f{i}":{i}"#)).collect();
    accept(&format!(r#"{{"type":"IMG","unit":"a"{many}}}"#));
    assert_eq!(
        reason(&format!(
            r#"{{"type":"IMG","unit":"a"{many},"f7":0,"f3":0}}"#
        )),
        r#"duplicate field "f7""#
    );
}

#[test]
fn names_differing_only_in_letter_case_are_refused() {
    let cases = [
        (
            r#"{"Type":"FRS","type":"IMG","unit":"cam-05","id":1}"#,
            r#"fields "Type" and "type" differ only in letter case"#,
        ),
        (
            r#"{"type":"IMG","TYPE":"IMG","unit":"a"}"#,
            r#"fields "type" and "TYPE" differ only in letter case"#,
        ),
        (
            r#"{"type":"IMG","unit":"a","Unit":"b"}"#,
            r#"fields "unit" and "Unit" differ only in letter case"#,
        ),
        (
            r#"{"type":"IMG","unit":"a","ID":2,"id":1}"#,
            r#"fields "ID" and "id" differ only in letter case"#,
        ),
        (
            r#"{"type":"WFI","unit":"a","wifi_enabled":true,"wifi_password":"x","Wifi_Password":"y"}"#,
            r#"fields "wifi_password" and "Wifi_Password" differ only in letter case"#,
        ),
        (
            r#"{"type":"AIM","unit":"a","MD5":"x","model_id":1,"link":"l","md5":"0123456789abcdef0123456789abcdef"}"#,
            r#"fields "MD5" and "md5" differ only in letter case"#,
        ),
        (
            r#"{"type":"CTS","unit":"a","cs_gain":1,"CS_GAIN":2}"#,
            r#"fields "cs_gain" and "CS_GAIN" differ only in letter case"#,
        ),
        // Any field, not only those a rule reads.
        (
            r#"{"type":"IMG","unit":"a","Foo":1,"foo":2}"#,
            r#"fields "Foo" and "foo" differ only in letter case"#,
        ),
        // Names are compared as decoded.
        (
            r#"{"type":"IMG","unit":"a","\u0054ype":"FRS"}"#,
            r#"fields "type" and "Type" differ only in letter case"#,
        ),
        // The first field that clashes with an earlier one decides.
        (
            r#"{"type":"IMG","unit":"a","x":1,"x":2,"X":3}"#,
            r#"duplicate field "x""#,
        ),
        (
            r#"{"type":"IMG","unit":"a","x":1,"X":2,"x":3}"#,
            r#"fields "x" and "X" differ only in letter case"#,
        ),
        // Names are quoted escaped: none can break a log line.
        (
            r#"{"type":"IMG","unit":"a","a\nERROR b":1,"A\nerror B":2}"#,
            r#"fields "a\nERROR b" and "A\nerror B" differ only in letter case"#,
        ),
        (
            r#"{"type":"IMG","unit":"a","a\"b":1,"a\"b":2}"#,
            r#"duplicate field "a\"b""#,
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(reason(input), expected, "{input}");
        assert_eq!(
            validate(input.as_bytes(), false).map_err(|r| r.reason),
            Err(expected.to_owned()),
            "checked whatever VALIDATE_FIELDS says: {input}"
        );
    }
    // What was read is reported, from the exact names.
    let rejection = reject(br#"{"Type":"FRS","type":"IMG","unit":"cam-05","id":1}"#);
    assert_eq!(rejection.kind.as_deref(), Some("IMG"));
    assert_eq!(rejection.unit.as_deref(), Some("cam-05"));
    assert_eq!(rejection.id.as_deref(), Some("1"));
    // Type and unit come first, as for duplicates.
    assert_eq!(
        reason(r#"{"Type":"IMG","type":"XYZ","unit":"a"}"#),
        r#"unknown type "XYZ""#
    );
    assert_eq!(
        reason(r#"{"type":"IMG","Type":"FRS","unit":"a/b"}"#),
        r#"unit "a/b" contains '/'"#
    );
    // A lone case variant is just another field: `type` is still missing.
    assert_eq!(
        reason(r#"{"Type":"IMG","unit":"a"}"#),
        r#"missing field "type""#
    );
    assert_eq!(
        reason(r#"{"type":"FRS","unit":"a","Reset_Level":1}"#),
        r#"missing field "reset_level""#
    );
    accept(r#"{"type":"IMG","unit":"a","Foo":1,"bar":2,"FOO_":3}"#);
    // Only ASCII letters are folded, and only the top level counts.
    accept(r#"{"type":"IMG","unit":"a","é":1,"É":2,"ß":3,"SS":4}"#);
    accept(r#"{"type":"CFG","unit":"a","configs":{"K":1,"k":2},"x":[{"A":1,"a":1}]}"#);
    // Long names are cut in the reason.
    let long = "n".repeat(300);
    let r = reason(&format!(
        r#"{{"type":"IMG","unit":"a","{long}":1,"{}":2}}"#,
        long.to_uppercase()
    ));
    assert!(
        r.len() < 200 && r.ends_with("differ only in letter case"),
        "{r}"
    );
}

#[test]
fn case_variants_among_many_fields_are_found_in_linear_time() {
    let many: String = (0..40).map(|i| format!(r#","f{i}":{i}"#)).collect();
    assert_eq!(
        reason(&format!(r#"{{"type":"IMG","unit":"a"{many},"F7":0}}"#)),
        r#"fields "f7" and "F7" differ only in letter case"#
    );
    assert_eq!(
        reason(&format!(r#"{{"TYPE":0,"type":"IMG","unit":"a"{many}}}"#)),
        r#"fields "TYPE" and "type" differ only in letter case"#
    );
    assert_eq!(
        reason(&format!(
            r#"{{"type":"IMG","unit":"a"{many},"f7":0,"F3":0}}"#
        )),
        r#"duplicate field "f7""#
    );
    // 100,000 distinct names, half with upper-case letters, then one clash.
    let mut input = String::from(r#"{"type":"IMG","unit":"a""#);
    for i in 0..100_000 {
        if i % 2 == 0 {
            input.push_str(&format!(r#","Field{i}":0"#));
        } else {
            input.push_str(&format!(r#","field{i}":0"#));
        }
    }
    let started = std::time::Instant::now();
    let distinct = format!("{input}}}");
    assert!(validate(distinct.as_bytes(), false).is_ok());
    let clash = format!(r#"{input},"FIELD99999":1}}"#);
    assert_eq!(
        validate(clash.as_bytes(), false).map_err(|r| r.reason),
        Err(r#"fields "field99999" and "FIELD99999" differ only in letter case"#.to_owned())
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn unpaired_surrogate_in_a_field_name() {
    assert_eq!(
        reason(r#"{"type":"IMG","unit":"a","\ud800x":1}"#),
        "invalid JSON: unpaired surrogate escape in a field name"
    );
    accept(r#"{"type":"IMG","unit":"a","\ud83d\ude00":1,"v":"\ud800"}"#);
}

#[test]
fn check_order() {
    assert_eq!(reason(r#"{"unit":"a/b"}"#), r#"missing field "type""#);
    assert_eq!(
        reason(r#"{"type":"XYZ","unit":"a/b"}"#),
        r#"unknown type "XYZ""#
    );
    assert_eq!(
        reason(r#"{"type":"AIM","unit":"a/b","x":1,"x":1}"#),
        r#"unit "a/b" contains '/'"#
    );
    assert_eq!(
        reason(r#"{"type":"AIM","unit":"a"}"#),
        r#"missing field "model_id""#
    );
    assert_eq!(
        reason(r#"{"type":"AIM","unit":"a","model_id":1,"link":"","md5":"x"}"#),
        r#"field "link" must be a non-empty string"#
    );
}

#[test]
fn update_rules() {
    let md5 = "0123456789abcdefABCDEF0123456789";
    for (kind, id_field) in [
        ("AIM", "model_id"),
        ("FMW", "firmware_id"),
        ("APP", "application_id"),
    ] {
        let with = |id: &str, link: &str, md5: &str| {
            format!(r#"{{"type":"{kind}","unit":"a","{id_field}":{id},"link":{link},"md5":{md5}}}"#)
        };
        let good_md5 = format!("\"{md5}\"");
        for id in [
            "0",
            "-5",
            "42",
            "18446744073709551615",
            "-9223372036854775808",
            "\"x\"",
            "\" \"",
        ] {
            accept(&with(id, "\"https://x/y\"", &good_md5));
        }
        let bad_id = format!("field \"{id_field}\" must be an integer or a non-empty string");
        for id in [
            "1.0",
            "1e2",
            "18446744073709551616",
            "\"\"",
            "null",
            "true",
            "[1]",
            "{}",
        ] {
            assert_eq!(reason(&with(id, "\"l\"", &good_md5)), bad_id, "{id}");
        }
        let bad_link = r#"field "link" must be a non-empty string"#;
        for link in ["\"\"", "5", "null", "[\"l\"]"] {
            assert_eq!(reason(&with("1", link, &good_md5)), bad_link, "{link}");
        }
        accept(&with(
            "1",
            "\"l\"",
            r#""\u0030123456789abcdef0123456789abcdef""#,
        ));
        let bad_md5 = r#"field "md5" must be 32 hex digits"#;
        for md5 in [
            "\"0123456789abcdef0123456789abcde\"",
            "\"0123456789abcdef0123456789abcdef0\"",
            "\"0123456789abcdef0123456789abcdeg\"",
            "\" 123456789abcdef0123456789abcdef\"",
            "\"\"",
            "12345678901234567890123456789012",
            "null",
        ] {
            assert_eq!(reason(&with("1", "\"l\"", md5)), bad_md5, "{md5}");
        }
        assert_eq!(
            reason(&format!(
                r#"{{"type":"{kind}","unit":"a","link":"l","md5":"{md5}"}}"#
            )),
            format!("missing field \"{id_field}\"")
        );
        assert_eq!(
            reason(&format!(
                r#"{{"type":"{kind}","unit":"a","{id_field}":1,"md5":"{md5}"}}"#
            )),
            r#"missing field "link""#
        );
        assert_eq!(
            reason(&format!(
                r#"{{"type":"{kind}","unit":"a","{id_field}":1,"link":"l"}}"#
            )),
            r#"missing field "md5""#
        );
    }
}

#[test]
fn container_rules() {
    accept(r#"{"type":"CDN","unit":"a","coordinates":{"x":1}}"#);
    accept(r#"{"type":"CDN","unit":"a","coordinates":[]}"#);
    accept(r#"{"type":"CFG","unit":"a","configs":[1]}"#);
    accept(r#"{"type":"CFG","unit":"a","configs":{}}"#);
    accept(r#"{"type":"UDS","unit":"a","settings":{}}"#);
    let cases = [
        (
            r#"{"type":"CDN","unit":"a"}"#,
            r#"missing field "coordinates""#,
        ),
        (
            r#"{"type":"CDN","unit":"a","coordinates":"1,2"}"#,
            r#"field "coordinates" must be an array or object"#,
        ),
        (
            r#"{"type":"CDN","unit":"a","coordinates":null}"#,
            r#"field "coordinates" must be an array or object"#,
        ),
        (r#"{"type":"CFG","unit":"a"}"#, r#"missing field "configs""#),
        (
            r#"{"type":"CFG","unit":"a","configs":3}"#,
            r#"field "configs" must be an object or array"#,
        ),
        (
            r#"{"type":"UDS","unit":"a"}"#,
            r#"missing field "settings""#,
        ),
        (
            r#"{"type":"UDS","unit":"a","settings":[]}"#,
            r#"field "settings" must be an object"#,
        ),
        (
            r#"{"type":"UDS","unit":"a","settings":"{}"}"#,
            r#"field "settings" must be an object"#,
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(reason(input), expected, "{input}");
    }
}

#[test]
fn capture_settings_rule() {
    accept(r#"{"type":"CTS","unit":"a","cs_":null}"#);
    accept(r#"{"type":"CTS","unit":"a","\u0063s_iso":100}"#);
    for input in [
        r#"{"type":"CTS","unit":"a"}"#,
        r#"{"type":"CTS","unit":"a","CS_iso":1,"xcs_iso":1}"#,
        r#"{"type":"CTS","unit":"a","x":{"cs_iso":1}}"#,
    ] {
        assert_eq!(
            reason(input),
            r#"CTS needs at least one "cs_" field"#,
            "{input}"
        );
    }
}

#[test]
fn wifi_rules() {
    for input in [
        r#"{"type":"WFI","unit":"a","wifi_enabled":false}"#,
        r#"{"type":"WFI","unit":"a","wifi_enabled":0}"#,
        r#"{"type":"WFI","unit":"a","wifi_enabled":0,"wifi_password":5}"#,
        r#"{"type":"WFI","unit":"a","wifi_enabled":1,"wifi_password":""}"#,
        r#"{"type":"WFI","unit":"a","wifi_enabled":true,"wifi_password":"p"}"#,
    ] {
        accept(input);
    }
    let cases = [
        (
            r#"{"type":"WFI","unit":"a"}"#,
            r#"missing field "wifi_enabled""#,
        ),
        (
            r#"{"type":"WFI","unit":"a","wifi_enabled":"true"}"#,
            r#"field "wifi_enabled" must be true, false, 0 or 1"#,
        ),
        (
            r#"{"type":"WFI","unit":"a","wifi_enabled":2}"#,
            r#"field "wifi_enabled" must be true, false, 0 or 1"#,
        ),
        (
            r#"{"type":"WFI","unit":"a","wifi_enabled":1.0}"#,
            r#"field "wifi_enabled" must be true, false, 0 or 1"#,
        ),
        (
            r#"{"type":"WFI","unit":"a","wifi_enabled":null}"#,
            r#"field "wifi_enabled" must be true, false, 0 or 1"#,
        ),
        (
            r#"{"type":"WFI","unit":"a","wifi_enabled":true}"#,
            r#"missing field "wifi_password""#,
        ),
        (
            r#"{"type":"WFI","unit":"a","wifi_enabled":1,"wifi_password":12345678}"#,
            r#"field "wifi_password" must be a string when Wi-Fi is enabled"#,
        ),
        (
            r#"{"type":"WFI","unit":"a","wifi_enabled":true,"wifi_password":null}"#,
            r#"field "wifi_password" must be a string when Wi-Fi is enabled"#,
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(reason(input), expected, "{input}");
    }
}

#[test]
fn factory_reset_rule() {
    for level in ["0", "1", "18446744073709551615", "\"full\"", "\"1\""] {
        accept(&format!(
            r#"{{"type":"FRS","unit":"a","reset_level":{level}}}"#
        ));
    }
    assert_eq!(
        reason(r#"{"type":"FRS","unit":"a"}"#),
        r#"missing field "reset_level""#
    );
    for level in [
        "-1",
        "-0",
        "1.5",
        "1e1",
        "\"\"",
        "null",
        "[]",
        "true",
        "18446744073709551616",
    ] {
        assert_eq!(
            reason(&format!(
                r#"{{"type":"FRS","unit":"a","reset_level":{level}}}"#
            )),
            r#"field "reset_level" must be a non-negative integer or a non-empty string"#,
            "{level}"
        );
    }
}

#[test]
fn secrets_never_reach_a_reason() {
    let secret = "hunter2-Secret";
    let cases = [
        format!(r#"{{"type":"WFI","unit":"a","wifi_enabled":1,"wifi_password":["{secret}"]}}"#),
        format!(
            r#"{{"type":"WFI","unit":"a","wifi_enabled":"{secret}","wifi_password":"{secret}"}}"#
        ),
        format!(r#"{{"type":"IMG","unit":"a","api_token":"{secret}","api_token":"{secret}"}}"#),
        format!(
            r#"{{"type":"AIM","unit":"a","model_id":1,"link":"","md5":"{secret}","client_secret":"{secret}"}}"#
        ),
        format!(r#"{{"type":"XYZ","unit":"a","password":"{secret}"}}"#),
        format!(r#"{{"type":"IMG","unit":"a/","token":"{secret}"}}"#),
        format!(r#"{{"type":"IMG","unit":"a","token":"{secret}"#),
    ];
    for input in cases {
        let rejection = reject(input.as_bytes());
        assert!(
            !rejection.reason.contains(secret),
            "{input} -> {}",
            rejection.reason
        );
    }
}

#[test]
fn rejection_carries_what_could_be_read() {
    let rejection = reject(br#"{"type":"AIM","unit":"cam-1","id":"x-1"}"#);
    assert_eq!(rejection.kind.as_deref(), Some("AIM"));
    assert_eq!(rejection.unit.as_deref(), Some("cam-1"));
    assert_eq!(rejection.id.as_deref(), Some(r#""x-1""#));
    assert_eq!(rejection.to_string(), r#"missing field "model_id""#);

    let rejection = reject(br#"{"id":7,"type":"XYZ","unit":"a/b"}"#);
    assert_eq!(
        (
            rejection.kind.as_deref(),
            rejection.unit.as_deref(),
            rejection.id.as_deref()
        ),
        (Some("XYZ"), Some("a/b"), Some("7"))
    );

    let rejection = reject(br#"{"type":5,"unit":"a","id":null}"#);
    assert_eq!(
        (
            rejection.kind.as_deref(),
            rejection.unit.as_deref(),
            rejection.id.as_deref()
        ),
        (None, Some("a"), Some("null"))
    );

    let rejection = reject(br#"{"type":"IMG","unit":["a"]}"#);
    assert_eq!(
        (
            rejection.kind.as_deref(),
            rejection.unit.as_deref(),
            rejection.id.as_deref()
        ),
        (Some("IMG"), None, None)
    );
}

#[test]
fn id_is_echoed_as_compact_json() {
    let cases = [
        (r#"{"type":"IMG","unit":"a","id":42}"#, Some("42")),
        (r#"{"type":"IMG","unit":"a","id":"abc"}"#, Some(r#""abc""#)),
        (r#"{"type":"IMG","unit":"a"}"#, None),
        (r#"{"type":"IMG","unit":"a","id":1.0e2}"#, Some("1.0e2")),
        (
            r#"{"type":"IMG","unit":"a","id":"a b\"c\u00e9"}"#,
            Some(r#""a b\"c\u00e9""#),
        ),
        (
            "{\"type\":\"IMG\",\"unit\":\"a\",\"id\" : { \"n\" : [ 1 ,\n 2 ], \"s\": \" x \" } }",
            Some(r#"{"n":[1,2],"s":" x "}"#),
        ),
        (r#"{"type":"IMG","unit":"a","id":false}"#, Some("false")),
        (r#"{"type":"IMG","unit":"a","x":{"id":1}}"#, None),
    ];
    for (input, id) in cases {
        assert_eq!(accept(input).id.as_deref(), id, "{input}");
    }
}

#[test]
fn payload_is_the_received_bytes() {
    let body = "{\"unit\" : \"a\",\n  \"x\":1.0e2, \"type\":\"CFG\",\t\"configs\":{\"z\":1,\"a\":[ -0.0 ]},\"extra\":\"\\u00e9\"}";
    let command = validate(format!(" \r\n\t{body}\n\n").as_bytes(), true).expect(body);
    assert_eq!(command.payload, body.as_bytes());
    assert_eq!(command.unit, "a");
    assert_eq!(command.kind, CommandType::Cfg);
}

#[test]
fn field_checks_can_be_turned_off() {
    let command = validate(br#"{"type":"AIM","unit":"u"}"#, false).expect("no field rules");
    assert_eq!(
        (command.kind, command.unit.as_str()),
        (CommandType::Aim, "u")
    );
    for input in [
        &br#"{"type":"AIM"}"#[..],
        br#"{"type":"AIMS","unit":"u"}"#,
        b"[]",
    ] {
        assert!(validate(input, false).is_err());
    }
}

#[test]
fn decode_string_agrees_with_serde_json() {
    let cases = [
        r#""""#,
        r#""plain""#,
        r#""\"\\\/\b\f\n\r\t""#,
        r#""\u0000\u001f\u00e9\u20AC""#,
        r#""\ud834\udd1e and \uD83D\uDE00""#,
        r#""é€𝄞 \\u0041""#,
    ];
    for raw in cases {
        let expected: String = serde_json::from_str(raw).expect(raw);
        assert_eq!(
            decode_string(raw.as_bytes()).as_deref(),
            Some(expected.as_str()),
            "{raw}"
        );
    }
    for raw in [
        r#""\ud800""#,
        r#""\udc00""#,
        r#""\ud800\u0041""#,
        r#""\ud800\ud800""#,
        r#""x\uDFFFx""#,
    ] {
        assert_eq!(decode_string(raw.as_bytes()), None, "{raw}");
    }
}

#[test]
fn a_key_is_compared_as_decoded_escaped_or_not() {
    assert!(string_is(br#""camera""#, "camera"));
    assert!(
        string_is(br#""c\u0061mera""#, "camera"),
        "an escape is decoded"
    );
    assert!(!string_is(br#""cameras""#, "camera"));
    assert!(!string_is(br#""Camera""#, "camera"));
    assert!(
        !string_is(br#""\ud800""#, "\u{fffd}"),
        "an unpaired surrogate is nothing"
    );
    assert!(string_is(b"\"\"", ""));
    assert!(!string_is(b"", ""), "no literal at all");
}

#[test]
fn random_input_never_panics_and_matches_serde_json() {
    let tokens: [&[u8]; 24] = [
        b"{",
        b"}",
        b"[",
        b"]",
        b",",
        b":",
        b" ",
        b"\"",
        b"0",
        b"1",
        b"-",
        b"e",
        b".",
        b"true",
        b"null",
        b"\"type\"",
        b"\"unit\"",
        b"\"IMG\"",
        b"\"a\"",
        b"\"a/\"",
        b"\"x\"",
        b"\\",
        b"\"\\u00e9\"",
        b"\xC3",
    ];
    let prefix = br#"{"type":"IMG","unit":"a""#;
    let mut state = 99u64;
    let mut next = |below: usize| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as usize) % below
    };
    let mut accepted = 0;
    for _ in 0..50_000 {
        let mut input = if next(2) == 0 {
            prefix.to_vec()
        } else {
            Vec::new()
        };
        for _ in 0..next(12) {
            input.extend_from_slice(tokens[next(tokens.len())]);
        }
        let ours = validate(&input, true);
        let theirs = serde_json::from_slice::<serde_json::Value>(&input);
        if let Ok(command) = &ours {
            accepted += 1;
            assert_eq!(command.payload, input.trim_ascii());
            let object = theirs
                .as_ref()
                .ok()
                .and_then(|v| v.as_object())
                .expect("serde agrees it is an object");
            assert_eq!(
                object.get("unit").and_then(|u| u.as_str()),
                Some(command.unit.as_str())
            );
        }
        if let Ok(serde_json::Value::Object(_)) = theirs {
            if let Err(r) = &ours {
                assert!(
                    !r.reason.starts_with("invalid JSON"),
                    "{:?}: {r}",
                    String::from_utf8_lossy(&input)
                );
            }
        }
    }
    assert!(accepted > 50, "{accepted}");
}

#[test]
fn numbers_that_overflow_a_double_are_refused_anywhere_when_fields_are_checked() {
    for input in [
        r#"{"type":"CDN","unit":"u","coordinates":[[1e9990,0]]}"#,
        r#"{"type":"CFG","unit":"u","configs":{"a":{"b":-1E400}}}"#,
        r#"{"type":"IMG","unit":"u","id":1e309}"#,
    ] {
        let err = validate(input.as_bytes(), true).unwrap_err();
        assert!(
            err.reason.contains("out of range"),
            "{input}: {}",
            err.reason
        );
        assert!(
            validate(input.as_bytes(), false).is_ok(),
            "VALIDATE_FIELDS = false checks type and unit only: {input}"
        );
    }
}

#[test]
fn large_but_finite_numbers_and_number_like_strings_pass() {
    for input in [
        r#"{"type":"CDN","unit":"u","coordinates":[[1e308,-1.5e-400,0.0000001]]}"#,
        r#"{"type":"CFG","unit":"u","configs":{"s":"1e99999","n":123456789012345678901234567890}}"#,
    ] {
        assert!(validate(input.as_bytes(), true).is_ok(), "{input}");
    }
}

#[test]
fn a_rejection_describes_the_command_for_the_log() {
    let r = validate(
        br#"{"type":"AIM","unit":"cam-01","id":7,"model_id":1,"link":"l"}"#,
        true,
    )
    .unwrap_err();
    assert_eq!(r.describe(), r#"type "AIM", unit "cam-01", id 7"#);
    let r = validate(br#"{"unit":"x\ny"}"#, true).unwrap_err();
    assert_eq!(r.describe(), r#"type ?, unit "x\ny""#);
    let r = validate(b"[1]", true).unwrap_err();
    assert_eq!(r.describe(), "type ?, unit ?");
    // An id object's secret fields are masked in the log line.
    let r = validate(
        br#"{"type":"XYZ","unit":"u","id":{"token":"T0k3n","n":1}}"#,
        true,
    )
    .unwrap_err();
    assert_eq!(
        r.describe(),
        r#"type "XYZ", unit "u", id {"n":1,"token":"***"}"#
    );
    assert_eq!(
        r.id.as_deref(),
        Some(r#"{"token":"T0k3n","n":1}"#),
        "echoed as sent"
    );
}

#[test]
fn the_camera_field_is_read_when_it_is_a_short_string() {
    let camera = |text: &str| {
        validate_with_camera(text.as_bytes(), true, Some("camera"))
            .unwrap()
            .1
    };
    assert_eq!(
        camera(r#"{"type":"IMG","unit":"MS500-H090-EP-2549-0038","camera":"30eda0e27100"}"#)
            .as_deref(),
        Some("30eda0e27100")
    );
    assert_eq!(
        camera(r#"{"type":"IMG","unit":"a","camera":"a\u0062"}"#).as_deref(),
        Some("ab")
    );
    assert_eq!(camera(r#"{"type":"IMG","unit":"a"}"#), None);
    assert_eq!(camera(r#"{"type":"IMG","unit":"a","camera":12}"#), None);
    assert_eq!(camera(r#"{"type":"IMG","unit":"a","camera":""}"#), None);
    let long = "c".repeat(MAX_CAMERA_BYTES + 1);
    assert_eq!(
        camera(&format!(r#"{{"type":"IMG","unit":"a","camera":"{long}"}}"#)),
        None
    );
    assert_eq!(
        validate_with_camera(br#"{"type":"IMG","unit":"a","camera":"x"}"#, true, None)
            .unwrap()
            .1,
        None
    );
}
