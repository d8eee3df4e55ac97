"""Generated corpora for the redact processor: planted canaries of every type inside
realistic prompts, and clean prompts that must not trip the rules. Deterministic per seed;
nothing here is a real credential (random strings of the issuers' formats)."""

from __future__ import annotations

import base64
import html
import json
import random
import string
import urllib.parse
import uuid
from dataclasses import dataclass

ALNUM = string.ascii_letters + string.digits
B64 = ALNUM + "+/"
URLSAFE = ALNUM + "-_"


@dataclass
class Canary:
    type: str  # expected rule id
    secret: str  # the text that must not survive
    text: str  # the secret inside its context
    phrase: str = ""  # the secret in its shortest context (for names, keys, scope, trace_state)
    disguise: str = ""  # how the text was disguised ("" = plainly)


def _r(rng: random.Random, alphabet: str, n: int) -> str:
    while True:
        s = "".join(rng.choice(alphabet) for _ in range(n))
        if any(c.isdigit() for c in s) and any(c.isalpha() for c in s):
            return s


def _luhn_complete(rng: random.Random, prefix: str, length: int) -> str:
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    for check in string.digits:
        cand = body + check
        total = 0
        for i, ch in enumerate(reversed(cand)):
            d = int(ch) * (2 if i % 2 else 1)
            total += d - 9 if d > 9 else d
        if total % 10 == 0:
            return cand
    raise AssertionError("unreachable")


def _iban(rng: random.Random, country: str, bban_len: int) -> str:
    bban = "".join(rng.choice(string.digits) for _ in range(bban_len))
    numeric = int("".join(str(int(c, 36)) for c in bban + country + "00"))
    check = 98 - numeric % 97
    iban = f"{country}{check:02d}{bban}"
    return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))


def _jwt(rng: random.Random) -> str:
    def enc(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    header = enc({"alg": "HS256", "typ": "JWT"})
    payload = enc({"sub": str(rng.randrange(10**9)), "name": "Jane Roe", "iat": 1732345678})
    return f"{header}.{payload}.{_r(rng, URLSAFE, 43)}"


def _pem(rng: random.Random, kind: str = "RSA PRIVATE KEY", newline: str = "\n") -> str:
    lines = [_r(rng, B64, 64) for _ in range(6)]
    return f"-----BEGIN {kind}-----{newline}" + newline.join(lines) + f"{newline}-----END {kind}-----"


def secrets_of_every_type(rng: random.Random) -> list[tuple[str, str, str]]:
    """(type, secret, how it appears in text) — the secret may sit inside a larger phrase."""
    aws_secret = _r(rng, ALNUM + "/+", 40)
    az_key = _r(rng, B64, 86) + "=="
    sas = _r(rng, ALNUM, 43)
    cohere = _r(rng, ALNUM, 40)
    pw = "Tr0ub4dor&" + _r(rng, ALNUM, 6)
    url_pw = _r(rng, ALNUM, 14)
    db_pw = "Zq" + _r(rng, ALNUM, 12) + "!9"
    pem = _pem(rng)
    pem_json = _pem(rng, "PRIVATE KEY", "\\n")
    key_id = "".join(rng.choice("0123456789abcdef") for _ in range(40))
    phone_fmt = rng.choice(["+1 415-555-{:04d}", "(212) 555-{:04d}", "+44 20 7946 {:04d}", "+49 30 1234{:04d}"])
    ssn = f"{rng.randrange(100, 665):03d}-{rng.randrange(1, 99):02d}-{rng.randrange(1, 9999):04d}"
    card_kind = rng.choice([("4", 16), ("51", 16), ("37", 15), ("6011", 16)])
    card = _luhn_complete(rng, *card_kind)
    card_txt = " ".join(card[i : i + 4] for i in range(0, len(card), 4)) if rng.random() < 0.5 else card
    sa_json = json.dumps(
        {"type": "service_account", "project_id": "acme-prod", "private_key_id": key_id, "private_key": "PEMHERE"}
    ).replace("PEMHERE", pem_json)
    out = [
        ("openai_key", s := "sk-proj-" + _r(rng, URLSAFE, 120), s),
        ("openai_key", s := "sk-" + _r(rng, ALNUM, 48), s),
        ("anthropic_key", s := "sk-ant-api03-" + _r(rng, URLSAFE, 93) + "AA", s),
        ("aws_access_key_id", s := "AKIA" + _r(rng, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16), s),
        ("aws_secret_access_key", aws_secret, f'aws_secret_access_key = "{aws_secret}"'),
        ("google_api_key", s := "AIza" + _r(rng, URLSAFE, 35), s),
        ("private_key", pem, pem),
        ("private_key", pem_json, sa_json),
        ("gcp_service_account_key_id", key_id, sa_json),
        (
            "azure_storage_key",
            az_key,
            f"DefaultEndpointsProtocol=https;AccountName=acmeprod;AccountKey={az_key};EndpointSuffix=core.windows.net",
        ),
        (
            "azure_sas_signature",
            sas,
            f"https://acmeprod.blob.core.windows.net/invoices/a.pdf?sv=2022-11-02&sp=r&sig={sas}%3D",
        ),
        ("groq_key", s := "gsk_" + _r(rng, ALNUM, 52), s),
        ("huggingface_token", s := "hf_" + _r(rng, ALNUM, 34), s),
        ("perplexity_key", s := "pplx-" + _r(rng, ALNUM, 48), s),
        ("cohere_key", cohere, f'COHERE_API_KEY="{cohere}"'),
        ("github_token", s := "ghp_" + _r(rng, ALNUM, 36), s),
        ("github_token", s := "gho_" + _r(rng, ALNUM, 36), s),
        ("github_fine_grained_pat", s := "github_pat_" + _r(rng, ALNUM, 22) + "_" + _r(rng, ALNUM, 59), s),
        ("gitlab_token", s := "glpat-" + _r(rng, URLSAFE, 20), s),
        (
            "slack_token",
            s := f"xoxb-{rng.randrange(10**11, 10**12)}-{rng.randrange(10**12, 10**13)}-" + _r(rng, ALNUM, 24),
            s,
        ),
        (
            "slack_webhook",
            s := "hooks.slack.com/services/T0"
            + _r(rng, ALNUM, 8)
            + "/B0"
            + _r(rng, ALNUM, 8)
            + "/"
            + _r(rng, ALNUM, 24),
            "https://" + s,
        ),
        ("stripe_key", s := "sk_live_" + _r(rng, ALNUM, 24), s),
        ("stripe_key", s := "rk_live_" + _r(rng, ALNUM, 24), s),
        ("jwt", s := _jwt(rng), s),
        ("bearer_token", s := _r(rng, URLSAFE, 40), f"curl -H 'Authorization: Bearer {s}' https://api.acme.io"),
        ("url_password", url_pw, f"postgresql://app_user:{url_pw}@db.prod.internal:5432/orders"),
        ("url_password", url_pw, f"redis://:{url_pw}@cache.internal:6379/0"),
        ("password_assignment", db_pw, f"Server=sql.acme.io;Database=orders;User Id=app;Password={db_pw};"),
        ("password_assignment", pw, f'{{"username": "jroe", "password": "{pw}"}}'),
        ("email", s := f"{rng.choice(['jane.doe', 'j.roe+billing', 'mike_o'])}{rng.randrange(100)}@acme-corp.io", s),
        ("phone", s := phone_fmt.format(rng.randrange(10000)), s),
        ("credit_card", card_txt, card_txt),
        ("us_ssn", ssn, ssn),
        ("iban", s := _iban(rng, "DE", 18), s),
        ("iban", s := _iban(rng, "GB", 18).replace(" ", ""), s),  # GB needs letters in reality; checksum only
    ]
    return out


PROMPT_TEMPLATES = [
    "Here is my key {x} please debug why the request fails with 401.",
    'I\'m getting an error when I call the API.\n\n```python\nclient = Client(api_key="{x}")\n'
    "resp = client.chat.completions.create(model='gpt-4o', messages=msgs)\n```\nWhat is wrong?",
    '{{"name": "send_report", "arguments": "{{\\"recipient\\": \\"ops\\", \\"note\\": \\"{x}\\"}}"}}',
    "Customer wrote: hi, my details are {x}, can you update my account? thanks",
    "LOG 2024-11-23T10:15:02Z worker-3 INFO connecting with {x} (attempt 2/5)",
    "### Config\n```yaml\ndatabase:\n  url: {x}\n  pool: 10\n```\nWhy does the pool exhaust?",
]


_NON_ASCII = ["Grüße aus München", "café crème", "日本語のテキスト", "emoji 😀 test", "Ελληνικά", "naïve résumé"]

FILLER = (
    "The quarterly report shows revenue grew 12% year over year, driven mostly by the enterprise tier. "
    "Churn stayed flat at 2.1%, while the median deal size rose to $48,200. The team recommends expanding "
    "the pilot in the EMEA region and revisiting the pricing page before the next release (v2.14.0). "
)


def canaries(seed: int, per_type: int = 3) -> list[Canary]:
    rng = random.Random(seed)
    out: list[Canary] = []
    for _ in range(per_type):
        for kind, secret, phrase in secrets_of_every_type(rng):
            template = rng.choice(PROMPT_TEMPLATES)
            body = template.replace("{x}", phrase).replace("{{", "{").replace("}}", "}")
            pad = FILLER * rng.randrange(3, 12)
            out.append(Canary(kind, secret, pad + body + "\n" + pad, phrase))
    return out


# --- disguises ---------------------------------------------------------------------------

FORMAT_CHARS = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u2062", "\u180e"]
DISGUISES = ("zero_width", "json_unicode_escape", "percent_encoding", "html_entity", "base64_whole")


def disguise(kind: str, text: str, secret: str, rng: random.Random) -> str:
    """`text` with its `secret` disguised one way (the rest of the text as it was)."""
    i = text.index(secret)
    if kind == "zero_width":
        cut = i + max(1, len(secret) // 2)
        return text[:cut] + rng.choice(FORMAT_CHARS) + text[cut:]
    if kind == "json_unicode_escape":
        # Message JSON (a JSON string, as gen_ai.input.messages travels) with the secret's first
        # character written as a \uXXXX escape.
        enc = json.dumps(text)[1:-1]
        sec = json.dumps(secret)[1:-1]
        j = enc.index(sec)
        enc = enc[:j] + f"\\u{ord(sec[0]):04x}" + enc[j + 1 :]
        return '[{"role": "user", "parts": [{"type": "text", "content": "' + enc + '"}]}]'
    if kind == "percent_encoding":
        return text[:i] + f"%{ord(secret[0]):02X}" + urllib.parse.quote(secret[1:], safe="") + text[i + len(secret) :]
    if kind == "html_entity":
        return text[:i] + f"&#{ord(secret[0])};" + html.escape(secret[1:]) + text[i + len(secret) :]
    if kind == "base64_whole":
        return base64.b64encode(text.encode()).decode()
    raise ValueError(kind)


def disguised_canaries(seed: int, per_type: int = 1) -> list[Canary]:
    """Every canary type under every disguise (phrase-sized texts: the secret in its context)."""
    rng = random.Random(seed)
    out: list[Canary] = []
    for _ in range(per_type):
        for kind, secret, phrase in secrets_of_every_type(rng):
            for d in DISGUISES:
                out.append(Canary(kind, secret, disguise(d, phrase, secret, rng), phrase, d))
    return out


def card_after_number(rng: random.Random) -> tuple[str, str]:
    """A card number preceded by another number, the case a greedy digit run used to miss."""
    card = _luhn_complete(rng, rng.choice(["4", "51", "6011"]), 16)
    grouped = " ".join(card[i : i + 4] for i in range(0, 16, 4))
    return grouped, rng.choice([f"qty {rng.randrange(1, 9)} {grouped}", f"{rng.randrange(1, 99)} {grouped} thanks"])


def _code_snippets(rng: random.Random) -> list[str]:
    return [
        "def handler(event, context):\n    password = getpass.getpass()\n    api_key = os.environ['OPENAI_API_KEY']\n"
        "    token = settings.SLACK_TOKEN\n    return {'statusCode': 200}",
        "const secret = process.env.JWT_SECRET;\nconst apiKey = config.get('stripe.key');\n"
        "app.post('/login', async (req, res) => { const { password } = req.body; });",
        "SELECT user_id, SUM(cost_usd) AS spend FROM otel_traces WHERE Timestamp > now() - INTERVAL 1 DAY "
        "GROUP BY user_id ORDER BY spend DESC LIMIT 10",
        "git clone git@github.com:acme/platform.git && cd platform && make test",
        "export OPENAI_API_KEY=your-key-here\npip install openai==1.54.3",
        "x = torch.randn(4, 16)\ny = x @ self.proj.weight.T + self.bias\nloss = F.cross_entropy(y, labels)",
        f"docker pull ghcr.io/acme/api@sha256:{rng.getrandbits(256):064x}",
        "password_hash = bcrypt.hashpw(password.encode(), bcrypt.gensalt())\nif user.password == password_hash:",
        "for i in range(1000000):\n    total += prices[i] * 1.0825  # tax",
        "kubectl get secret db-creds -o jsonpath='{.data.password}' | base64 -d",
        "curl -s https://api.acme.io/v1/orders?limit=50&cursor=eyJpZCI6MTIzfQ",
        "[tool.ruff]\nline-length = 120\ntarget-version = 'py311'",
    ]


def clean_values(seed: int, n: int = 3000) -> list[str]:
    """Realistic clean attribute values: prose, code, ids, hashes, prices, numbers, images."""
    rng = random.Random(seed)
    makers = [
        lambda: str(uuid.UUID(int=rng.getrandbits(128))),
        lambda: f"{rng.getrandbits(160):040x}",  # git SHA
        lambda: f"sha256:{rng.getrandbits(256):064x}",
        lambda: f"{rng.getrandbits(128):032x}",  # trace id
        lambda: f"${rng.randrange(1, 99999):,}.{rng.randrange(100):02d}",
        lambda: f"Order #{rng.randrange(10**7, 10**10)}",
        lambda: f"ORD-{rng.randrange(2019, 2026)}-{rng.randrange(10**5, 10**6)}",
        lambda: f"invoice INV-{rng.randrange(10**6)} total EUR {rng.randrange(10**5)}.{rng.randrange(100):02d}",
        lambda: (
            f"2024-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}T{rng.randrange(24):02d}:"
            f"{rng.randrange(60):02d}:{rng.randrange(60):02d}.{rng.randrange(10**6):06d}Z"
        ),
        lambda: str(rng.randrange(1_600_000_000, 1_800_000_000)),  # epoch s
        lambda: str(rng.randrange(1_600_000_000_000, 1_800_000_000_000)),  # epoch ms
        lambda: str(rng.randrange(1_600_000_000 * 10**9, 1_800_000_000 * 10**9)),  # epoch ns
        lambda: "data:image/png;base64," + base64.b64encode(rng.randbytes(rng.randrange(600, 3000))).decode(),
        lambda: base64.b64encode(rng.randbytes(48)).decode(),
        lambda: f"chatcmpl-{_r(rng, ALNUM, 29)}",
        lambda: f"msg_{_r(rng, ALNUM, 24)}",
        lambda: f"call_{_r(rng, ALNUM, 24)}",
        lambda: f"req_{rng.getrandbits(96):024x}",
        lambda: (
            f"{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}:{rng.randrange(65536)}"
        ),
        lambda: (
            f"https://api.acme.io/v{rng.randrange(1, 4)}/users/{rng.randrange(10**6)}/orders?page={rng.randrange(50)}"
        ),
        lambda: f"/var/lib/tracepipe/data/{rng.getrandbits(64):016x}/part-{rng.randrange(1000):05d}.parquet",
        lambda: f"v{rng.randrange(10)}.{rng.randrange(40)}.{rng.randrange(100)}",
        lambda: rng.choice(["gpt-4o-2024-08-06", "claude-3-5-sonnet-20241022", "gemini-1.5-pro-002", "llama-3.1-70b"]),
        lambda: FILLER * rng.randrange(1, 8),
        lambda: rng.choice(_code_snippets(rng)),
        lambda: (
            f"Temperature {rng.randrange(-20, 45)}.{rng.randrange(10)}C at {rng.randrange(24):02d}:00, "
            f"humidity {rng.randrange(100)}%, wind {rng.randrange(80)} km/h"
        ),
        lambda: f"The answer is {rng.randrange(10**6)} and the ratio is {rng.random():.6f}",
        lambda: f"tracking number 1Z{_r(rng, string.ascii_uppercase + string.digits, 16)}",
        lambda: (
            f"ISBN 978-{rng.randrange(10)}-{rng.randrange(10**3, 10**4)}-"
            f"{rng.randrange(10**3, 10**4)}-{rng.randrange(10)}"
        ),
        lambda: f"Phone model SM-G{rng.randrange(900, 999)}U, build {rng.randrange(10**7, 10**8)}",
        # Clean values that carry what the disguise handling looks for.
        lambda: json.dumps([{"role": "user", "content": rng.choice(_NON_ASCII) + FILLER[: rng.randrange(9, 99)]}]),
        lambda: "https://www.google.com/search?q=" + urllib.parse.quote(rng.choice(_NON_ASCII) + " " + FILLER[:80]),
        lambda: html.escape(f"<p>{FILLER[: rng.randrange(40, 200)]} &copy; Acme & Co</p>") + "&nbsp;&mdash;",
        lambda: base64.b64encode(json.dumps({"id": rng.randrange(10**9), "q": FILLER[:60]}).encode()).decode(),
        lambda: base64.urlsafe_b64encode(rng.randbytes(rng.randrange(18, 64))).decode().rstrip("="),
        lambda: "\u200b".join(FILLER[: rng.randrange(30, 90)].split(" ")) + "\u00ad\ufeff",
        lambda: f"qty {rng.randrange(1, 9)} " + " ".join(str(rng.randrange(1000, 10000)) for _ in range(3)),
        lambda: " ".join(str(rng.randrange(100)) for _ in range(rng.randrange(10, 30))),  # a list of numbers
    ]
    return [rng.choice(makers)() for _ in range(n)]
