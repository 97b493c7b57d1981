#!/usr/bin/env python3
"""Regenerates fuzz/seeds/{validate,decoder,mqtt_decode}/ (run from anywhere)."""
import json, os, pathlib

here = pathlib.Path(__file__).resolve().parent

COMMANDS = {
    "aim": {"type": "AIM", "unit": "MS500-0001", "id": 101, "model_id": 42,
            "link": "https://models.example.com/yolo-42.bin", "md5": "9e107d9d372bb6826bd81d3542a419d6"},
    "fmw": {"type": "FMW", "unit": "MS500-0001", "id": "fw-7", "firmware_id": "2.4.1",
            "link": "https://fw.example.com/ms500-2.4.1.bin", "md5": "E4D909C290D0FB1CA068FFADDF22CBD0"},
    "app": {"type": "APP", "unit": "site3:cam_2.a", "application_id": 7,
            "link": "https://apps.example.com/counter-7.tar", "md5": "d41d8cd98f00b204e9800998ecf8427e"},
    "cdn": {"type": "CDN", "unit": "MS500-0001", "coordinates": [[0, 0], [1920, 0], [1920, 1080], [0, 1080]]},
    "cfg": {"type": "CFG", "unit": "MS500-0001", "configs": {"fps": 15, "resolution": "1920x1080", "night_mode": False}},
    "cts": {"type": "CTS", "unit": "MS500-0001", "cs_exposure": 120, "cs_gain": 2.5},
    "wfi": {"type": "WFI", "unit": "MS500-0001", "wifi_enabled": True, "wifi_ssid": "plant-4",
            "wifi_password": "correct horse"},
    "scs": {"type": "SCS", "unit": "MS500-0001", "id": 5},
    "uds": {"type": "UDS", "unit": "MS500-0001", "settings": {"timezone": "Europe/Berlin", "ntp": "pool.ntp.org"}},
    "frs": {"type": "FRS", "unit": "MS500-0001", "reset_level": 2},
    "img": {"type": "IMG", "unit": "MS500-0001"},
    "rsr": {"type": "RSR", "unit": "MS500-0001", "seq": 1234},
}

def compact(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()

def pretty_crlf(obj):
    return json.dumps(obj, indent=2).replace("\n", "\r\n").encode()

VALIDATE = {f"{k}.json": compact(v) for k, v in COMMANDS.items()}
VALIDATE.update({
    "pretty_cfg.json": pretty_crlf(COMMANDS["cfg"]) + b"\r\n",
    "pretty_wfi.json": b"  " + json.dumps(COMMANDS["wfi"], indent=4).encode() + b"\n",
    "bad_truncated.json": compact(COMMANDS["aim"])[:-7],
    "bad_trailing_comma.json": b'{"type":"IMG","unit":"MS500-0001",}',
    "bad_unit.json": b'{"type":"IMG","unit":"MS500/0001 #","token":"hunter2-Secret"}',
    "bad_type.json": b'{"type":"aim","unit":"MS500-0001","api_token":"hunter2-Secret"}',
    "bad_dup.json": b'{"type":"IMG","unit":"a","unit":"b","client_secret":"s3cr3t-value"}',
    "bad_md5.json": b'{"type":"AIM","unit":"a","model_id":-1,"link":"x","md5":"9e107d9d372bb6826bd81d3542a419dZ"}',
    "bad_wfi_secret.json": b'{"type":"WFI","unit":"a","wifi_enabled":1,"wifi_password":["hunter2-Secret"]}',
    "bad_surrogate.json": b'{"type":"IMG","unit":"a","\\ud800":1}',
    "escapes.json": b'{"type":"\\u0049MG","unit":"caf\\u00e9","id":{"a":[1e400,-0.5E-3,"\\ud83d\\ude00"]},"x":"\\ud800"}',
    "not_object.json": b'["IMG","MS500-0001"]',
    "utf8.json": '{"type":"RSR","unit":"MS500-0001","note":"größe ≥ 5 😀"}'.encode(),
    "frs_big.json": b'{"type":"FRS","unit":"u","reset_level":18446744073709551616}',
})

def header(limit_sel, split):
    return bytes([limit_sel, split])

stream_all = b"\n".join(compact(v) for v in COMMANDS.values()) + b"\n"
DECODER = {
    # header: byte0 & 7 picks the limit (0-3: 4096, 4: 1, 5: 7, 6: 32, 7: 300), byte1 the chunking
    "ndjson_all": header(0, 0x03) + stream_all,
    "ndjson_all_small_chunks": header(8, 0x00) + stream_all,
    "pretty_crlf": header(1, 0x05) + pretty_crlf(COMMANDS["cfg"]) + b"\r\n" + pretty_crlf(COMMANDS["aim"]),
    "no_separator": header(2, 0x02) + compact(COMMANDS["img"]) + compact(COMMANDS["scs"]) + b"1 2 true[null]\"s\"",
    "garbage_then_valid": header(3, 0x04) + b"GET / HTTP/1.1\r\n" + compact(COMMANDS["frs"]) + b"\n{\"a\":\xff}\n" + compact(COMMANDS["rsr"]),
    "broken_pretty": header(0, 0x06) + b'{\n  "type": "IMG",\n  "unit": oops\n}\n' + compact(COMMANDS["img"]) + b"\n",
    "too_large_limit32": header(6, 0x01) + compact(COMMANDS["aim"]) + b"\n",
    "no_resync_limit7": header(5, 0x02) + b"xxxxxxxxxxxxxxxx\n" + b"[]",
    "limit1": header(4, 0x00) + b"1 2\n[\n0",
    "limit300_mixed": header(7, 0x03) + compact(COMMANDS["cdn"]) + b"\n" + compact(COMMANDS["uds"]) + b"\n-12.5e+3 ",
    "deep": header(0, 0x07) + b"[" * 128 + b"]" * 128 + b"\n" + b"[" * 129 + b"]" * 129 + b"\n{}",
    "unicode": header(0, 0x02) + '["é€𝄞","\\ud800",'.encode() + b'"\\uDFFF"]' + b'\n"\xed\xa0\x80"\n' + compact(COMMANDS["wfi"]),
    "scalar_at_end": header(0, 0x01) + compact(COMMANDS["img"]) + b"\n12345",
}

def mqtt(first, body):
    """One MQTT packet: `first` byte, remaining length, `body`."""
    n, length = len(body), b""
    while True:
        b, n = n % 128, n // 128
        length += bytes([b | (0x80 if n else 0)])
        if not n:
            return bytes([first]) + length + body

CONNACK, PUBACK, PINGRESP = mqtt(0x20, b"\0\0"), mqtt(0x40, b"\x12\x34"), mqtt(0xD0, b"")
SUBACK, PUBLISH = mqtt(0x90, b"\0\1\1"), mqtt(0x32, b"\0\3a/b\0\7" + b'{"x":1}')
# What brokers send the publish link (CONNACK, PUBACK, PINGRESP), what they
# should not (the rest), and broken lengths.
MQTT_DECODE = {
    "connack": CONNACK,
    "connack_session_refused": mqtt(0x20, b"\1\5"),
    "connack_unknown_code": mqtt(0x20, b"\0\x09"),
    "puback": PUBACK,
    "puback_state": mqtt(0x40, b"\xff\xff"),
    "pingresp": PINGRESP,
    "stream": CONNACK + PUBACK + mqtt(0x40, b"\0\1") + PINGRESP + SUBACK + PUBLISH + PUBACK,
    "publish_200": mqtt(0x30, b"\0\1t" + b"p" * 200),
    "malformed_puback": mqtt(0x40, b"\0\1\2"),
    "malformed_connack": mqtt(0x20, b"\0"),
    "reserved_types": mqtt(0x00, b"") + mqtt(0xF0, b"\1"),
    "length_five_bytes": b"\x30\xff\xff\xff\xff\x7f",
    "too_large": b"\x30\x81\x80\x04",
    "partial": PUBACK[:3],
}

for name, files in (("validate", VALIDATE), ("decoder", DECODER), ("mqtt_decode", MQTT_DECODE)):
    d = here / name
    d.mkdir(parents=True, exist_ok=True)
    for f in d.iterdir():
        f.unlink()
    for fname, data in files.items():
        (d / fname).write_bytes(data)
    print(f"{name}: {len(files)} seeds")
