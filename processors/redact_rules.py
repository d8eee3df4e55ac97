"""The detection rules of the redact processor: secrets and PII, with their validators.

Each rule is one regular expression written so that both Python's `re` (the precise,
second pass) and Hyperscan (the multi-pattern prefilter, compiled with
HS_FLAG_PREFILTER so look-arounds are approximated into a superset) accept it. A rule
may name a capture group whose text is the secret (`group`): only that part is masked,
so `postgres://app:s3cret@db` keeps its host. A validator (Luhn, mod-97, JWT header,
entropy) rejects look-alikes after the regex matched.

Where each pattern comes from is said next to it: gitleaks' default config
(config/gitleaks.toml, rule ids quoted), Yelp's detect-secrets plugins, or the
issuer's documented format. Patterns were loosened where gitleaks demands an exact
length that test keys and older keys do not have (OpenAI, Anthropic), and tightened
with validators where prose would otherwise trip them (phones, cards).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

Validator = Callable[[str], bool]


@dataclass(frozen=True)
class Rule:
    id: str
    category: str  # "secret" or "pii"
    pattern: str
    caseless: bool = False
    group: int = 0  # capture group holding the secret (0 = whole match)
    validator: Validator | None = None
    priority: int = 50  # higher wins when two findings overlap
    source: str = ""
    # Cheaper superset for the multi-pattern pass: an anchor plus a FIXED-length tail, so the
    # engine reports about one match end per occurrence (open-ended tails report one per char).
    prefilter: str | None = None
    # The match can be longer than the search window around a prefilter hit: search whole values.
    unbounded: bool = False
    # When the validator rejects a match: the (start, end) parts of it to validate instead
    # (a card number preceded or followed by other digits: "qty 2 4111 1111 1111 1111").
    parts: Callable[[str], list[tuple[int, int]]] | None = None
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        flags = re.ASCII | (re.IGNORECASE if self.caseless else 0)
        object.__setattr__(self, "regex", re.compile(self.pattern, flags))


# --- validators ------------------------------------------------------------------------


def shannon_entropy(s: str) -> float:
    if not s:
        return 0.0
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values())


def looks_random(token: str, min_entropy: float = 3.0) -> bool:
    """A generated key: letters and digits mixed, high entropy (gitleaks uses entropy 3-4)."""
    has_digit = any(c.isdigit() for c in token)
    has_alpha = any(c.isalpha() for c in token)
    return has_digit and has_alpha and shannon_entropy(token) >= min_entropy


def _random_tail(prefix_len: int, min_entropy: float = 3.0) -> Validator:
    return lambda s: looks_random(s[prefix_len:], min_entropy)


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


_CARD_PREFIX = re.compile(
    r"^(?:4\d{12}(?:\d{3}){0,2}"  # Visa 13/16/19
    r"|5[1-5]\d{14}|2(?:2[2-9][1-9]|2[3-9]\d|[3-6]\d\d|7[01]\d|720)\d{12}"  # Mastercard
    r"|3[47]\d{13}"  # Amex
    r"|6(?:011|5\d\d|4[4-9]\d)\d{12,15}"  # Discover
    r"|3(?:0[0-5]|[68]\d)\d{11,16}"  # Diners
    r"|35(?:2[89]|[3-8]\d)\d{12,15}"  # JCB
    r"|62\d{14,17})$"  # UnionPay
)


def card_ok(s: str) -> bool:
    digits = re.sub(r"[ -]", "", s)
    if not 13 <= len(digits) <= 19:
        return False
    return bool(_CARD_PREFIX.match(digits)) and luhn_ok(digits)


_DIGIT_GROUP = re.compile(r"\d+")


def _plausible_grouping(groups: list[str], seps: set[str]) -> bool:
    """How card numbers are written: one run, 4-4-4-4(-1..3) groups, or Amex/Diners 4-6-5 / 4-6-4."""
    if len(groups) == 1:
        return True
    if len(seps) != 1:
        return False
    sizes = [len(g) for g in groups]
    if sizes in ([4, 6, 5], [4, 6, 4]):
        return True
    return all(n == 4 for n in sizes[:-1]) and 1 <= sizes[-1] <= 4


def card_text_ok(s: str) -> bool:
    """A card number as people write it: card_ok, and grouped the way cards are grouped
    ("4 3318 9758 9763" passes Luhn as a 13-digit Visa, but no one writes a card like that)."""
    groups = _DIGIT_GROUP.findall(s)
    seps = {x for x in re.split(r"\d+", s) if x}
    return _plausible_grouping(groups, seps) and card_ok(s)


def card_parts(s: str) -> list[tuple[int, int]]:
    """Valid card numbers inside a longer digit run, leftmost-longest, not overlapping.

    Only whole digit groups are tried (a part starts and ends at a separator), written as cards
    are written (`_plausible_grouping`): "2 4111 1111 1111 1111" yields the card, while a digit
    run glued inside a longer run or a hex digest never does."""
    groups = [(m.start(), m.end()) for m in _DIGIT_GROUP.finditer(s)]
    out: list[tuple[int, int]] = []
    i = 0
    while i < len(groups):
        found = None
        for j in range(min(len(groups), i + 8) - 1, i - 1, -1):
            a, b = groups[i][0], groups[j][1]
            digits = sum(e - f for f, e in groups[i : j + 1])
            if not 13 <= digits <= 19:
                continue
            seps = {s[groups[k][1] : groups[k + 1][0]] for k in range(i, j)}
            if _plausible_grouping([s[f:e] for f, e in groups[i : j + 1]], seps) and card_ok(s[a:b]):
                found = (a, b, j)
                break
        if found is None:
            i += 1
        else:
            out.append(found[:2])
            i = found[2] + 1
    return out


# IBAN lengths by country (ISO 13616 registry, the common subset); others: 15..34.
_IBAN_LENGTHS = {
    "AD": 24,
    "AE": 23,
    "AT": 20,
    "BE": 16,
    "BG": 22,
    "BH": 22,
    "BR": 29,
    "CH": 21,
    "CY": 28,
    "CZ": 24,
    "DE": 22,
    "DK": 18,
    "EE": 20,
    "ES": 24,
    "FI": 18,
    "FR": 27,
    "GB": 22,
    "GI": 23,
    "GR": 27,
    "HR": 21,
    "HU": 28,
    "IE": 22,
    "IL": 23,
    "IS": 26,
    "IT": 27,
    "KW": 30,
    "KZ": 20,
    "LB": 28,
    "LI": 21,
    "LT": 20,
    "LU": 20,
    "LV": 21,
    "MC": 27,
    "MT": 31,
    "NL": 18,
    "NO": 15,
    "PK": 24,
    "PL": 28,
    "PT": 25,
    "QA": 29,
    "RO": 24,
    "SA": 24,
    "SE": 24,
    "SI": 19,
    "SK": 24,
    "SM": 27,
    "TR": 26,
    "UA": 29,
}


def iban_ok(s: str) -> bool:
    iban = s.replace(" ", "").upper()
    expected = _IBAN_LENGTHS.get(iban[:2])
    if expected is not None and len(iban) != expected:
        return False
    if not 15 <= len(iban) <= 34:
        return False
    rearranged = iban[4:] + iban[:4]
    try:
        number = int("".join(str(int(c, 36)) for c in rearranged))
    except ValueError:
        return False
    return number % 97 == 1


def jwt_ok(s: str) -> bool:
    header = s.split(".", 1)[0]
    try:
        decoded = base64.urlsafe_b64decode(header + "=" * (-len(header) % 4))
        obj = json.loads(decoded)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return False
    return isinstance(obj, dict) and ("alg" in obj or "typ" in obj)


def phone_ok(s: str) -> bool:
    digits = re.sub(r"\D", "", s)
    return 10 <= len(digits) <= 15 and len(set(digits)) > 2


def ssn_ok(s: str) -> bool:
    area, group, serial = s.split("-")
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


_CODE_CHARS = set("()[]{}$<>%*`\\")
_PLACEHOLDERS = {
    "password",
    "passwd",
    "secret",
    "changeme",
    "changeit",
    "xxxxxx",
    "redacted",
    "example",
    "none",
    "null",
    "undefined",
    "true",
    "false",
    "your_password",
    "your-password",
    "yourpassword",
}
_PLACEHOLDER_PARTS = ("your", "example", "placeholder", "dummy", "here", "xxxx", "****", "changeme")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*$")


def secret_value_ok(s: str) -> bool:
    """A value assigned to password=/secret=/api_key=: not code, not a placeholder
    (the spirit of gitleaks' generic-api-key allowlist)."""
    if any(c in _CODE_CHARS for c in s):
        return False
    low = s.lower()
    if low in _PLACEHOLDERS or set(low) <= {"x", "*", "."} or any(w in low for w in _PLACEHOLDER_PARTS):
        return False
    # A variable, attribute or constant name (password=user_password) is not a secret.
    return not (_IDENTIFIER.match(s) and ("_" in s or "." in s or s.isupper()))


_EMAIL_LOCAL_SKIP = {"git"}
_EMAIL_DOMAIN_SKIP = {"self", "this", "cls", "sha256", "localhost"}


def email_ok(s: str) -> bool:
    local, _, domain = s.rpartition("@")
    if local.lower() in _EMAIL_LOCAL_SKIP:
        return False
    first = domain.split(".", 1)[0].lower()
    return first not in _EMAIL_DOMAIN_SKIP


# --- the rules ---------------------------------------------------------------------------

# The separator-free body of a key after its prefix must look generated.
RULES: tuple[Rule, ...] = (
    # Private key blocks — gitleaks "private-key"; detect-secrets private_key.py. Matches PEM blocks
    # with real or JSON-escaped newlines (GCP service-account JSON carries "\n").
    Rule(
        "private_key",
        "secret",
        r"-----BEGIN[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----[\s\S]{64,}?-----END[ A-Z0-9_-]{0,100}"
        r"PRIVATE KEY(?: BLOCK)?-----",
        priority=95,
        source="gitleaks private-key",
        unbounded=True,
        prefilter=r"-----BEGIN[ A-Z0-9_-]{0,100}PRIVATE KEY",
    ),
    # GCP service-account JSON: the private_key_id next to the key — issuer's key file format.
    Rule(
        "gcp_service_account_key_id",
        "secret",
        r"private_key_id\\{0,2}\"\s*:\s*\\{0,2}\"([a-f0-9]{40})\b",
        group=1,
        priority=80,
        source="GCP service account key file format",
        prefilter=r"private_key_id",
    ),
    # AWS — gitleaks "aws-access-token"; the secret key in context after detect-secrets' AWS detector
    # (aws ... key/secret ... then 40 base64 chars).
    Rule(
        "aws_access_key_id",
        "secret",
        r"\b(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}\b",
        priority=85,
        source="gitleaks aws-access-token",
        prefilter=r"(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}",
    ),
    Rule(
        "aws_secret_access_key",
        "secret",
        r"aws.{0,20}?(?:secret|key|pwd|pw|password|pass|token).{0,20}?[\s'\"=:]([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])",
        caseless=True,
        group=1,
        validator=lambda s: shannon_entropy(s) >= 3.5,
        priority=85,
        source="detect-secrets aws.py (context form)",
        prefilter=r"aws.{0,20}?(?:secret|key|pwd|pw|password|pass|token)",
    ),
    # Google API keys (GCP, Gemini / Google AI Studio) — gitleaks "gcp-api-key".
    Rule(
        "google_api_key",
        "secret",
        r"\bAIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])",
        priority=85,
        source="gitleaks gcp-api-key",
        prefilter=r"AIza[0-9A-Za-z_-]{35}",
    ),
    # Azure — detect-secrets azure_storage_key.py (AccountKey=<86+ base64>==), connection strings; SAS sig.
    Rule(
        "azure_storage_key",
        "secret",
        r"AccountKey\s*=\s*([A-Za-z0-9+/]{86,}={0,2})",
        caseless=True,
        group=1,
        priority=85,
        source="detect-secrets azure_storage_key.py",
        prefilter=r"AccountKey\s*=",
    ),
    Rule(
        "azure_sas_signature",
        "secret",
        r"[?&]sig=([A-Za-z0-9%+/]{40,}(?:%3D|=){0,2})",
        group=1,
        priority=80,
        source="Azure SAS token format (sig= parameter)",
        prefilter=r"[?&]sig=[A-Za-z0-9%+/]{40}",
    ),
    # LLM providers. Anthropic — gitleaks "anthropic-api-key"/"anthropic-admin-api-key", length relaxed.
    Rule(
        "anthropic_key",
        "secret",
        r"\bsk-ant-[a-z0-9]{2,12}-[A-Za-z0-9_-]{20,}",
        priority=90,
        validator=_random_tail(7),
        source="gitleaks anthropic-api-key (length relaxed)",
        prefilter=r"sk-ant-",
    ),
    # OpenAI — gitleaks "openai-api-key" requires the T3BlbkFJ marker; keys in the wild (and older
    # ones) lack it, so any sk-/sk-proj-/sk-svcacct- token of 20+ random chars.
    Rule(
        "openai_key",
        "secret",
        r"\bsk-(?:proj-|svcacct-|admin-|None-)?[A-Za-z0-9_-]{20,}",
        priority=70,
        validator=_random_tail(3),
        source="gitleaks openai-api-key (marker relaxed)",
        prefilter=r"sk-(?:proj-|svcacct-|admin-|None-)?[A-Za-z0-9_-]{20}",
    ),
    Rule(
        "groq_key",
        "secret",
        r"\bgsk_[A-Za-z0-9]{40,}\b",
        validator=_random_tail(4),
        priority=85,
        source="Groq key format (gsk_ + 52 chars)",
        prefilter=r"gsk_[A-Za-z0-9]{40}",
    ),
    Rule(
        "huggingface_token",
        "secret",
        r"\b(?:hf_|api_org_)[A-Za-z0-9]{30,}\b",
        validator=_random_tail(3, 2.5),
        priority=85,
        source="gitleaks huggingface-access-token / huggingface-organization-api-token",
        prefilter=r"(?:hf_|api_org_)[A-Za-z0-9]{30}",
    ),
    Rule(
        "perplexity_key",
        "secret",
        r"\bpplx-[A-Za-z0-9]{40,}\b",
        priority=85,
        source="gitleaks perplexity-api-key",
        prefilter=r"pplx-[A-Za-z0-9]{40}",
    ),
    Rule(
        "cohere_key",
        "secret",
        r"(?:cohere|co_api_key)[\w.-]{0,20}[\s'\"]{0,3}(?:=|:|=>)[\s'\"=]{0,5}([A-Za-z0-9]{40})\b",
        caseless=True,
        group=1,
        validator=looks_random,
        priority=80,
        source="gitleaks cohere-api-token",
        prefilter=r"(?:cohere|co_api_key)",
    ),
    # Code hosting — gitleaks github-pat / github-oauth / github-app-token / github-refresh-token /
    # github-fine-grained-pat, gitlab-pat (+ routable).
    Rule(
        "github_token",
        "secret",
        r"\b(?:ghp|gho|ghu|ghs|ghr)_[0-9A-Za-z]{36,}\b",
        priority=90,
        source="gitleaks github-pat/-oauth/-app-token/-refresh-token",
        prefilter=r"(?:ghp|gho|ghu|ghs|ghr)_[0-9A-Za-z]{36}",
    ),
    Rule(
        "github_fine_grained_pat",
        "secret",
        r"\bgithub_pat_[0-9A-Za-z_]{60,}",
        priority=90,
        source="gitleaks github-fine-grained-pat",
        prefilter=r"github_pat_",
    ),
    Rule(
        "gitlab_token",
        "secret",
        r"\bgl(?:pat|dt|rt|ptt|ft|cbt)-[0-9A-Za-z_-]{20,}",
        priority=90,
        source="gitleaks gitlab-pat / gitlab-deploy-token / gitlab-runner-authentication-token",
        prefilter=r"gl(?:pat|dt|rt|ptt|ft|cbt)-[0-9A-Za-z_-]{20}",
    ),
    # Slack — gitleaks slack-bot-token / slack-user-token / slack-legacy-* / slack-app-token / slack-webhook-url.
    Rule(
        "slack_token",
        "secret",
        r"\bxox[abposre]-[0-9A-Za-z-]{10,}",
        priority=90,
        source="gitleaks slack-bot-token / slack-user-token / slack-legacy-token",
        prefilter=r"xox[abposre]-[0-9A-Za-z-]{10}",
    ),
    Rule(
        "slack_app_token",
        "secret",
        r"\bxapp-\d-[A-Z0-9]+-\d+-[a-z0-9]+",
        caseless=True,
        priority=90,
        source="gitleaks slack-app-token",
        prefilter=r"xapp-\d-",
    ),
    Rule(
        "slack_webhook",
        "secret",
        r"hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9+/]{20,}",
        priority=90,
        source="gitleaks slack-webhook-url",
        prefilter=r"hooks\.slack\.com/",
    ),
    # Stripe — gitleaks stripe-access-token.
    Rule(
        "stripe_key",
        "secret",
        r"\b(?:sk|rk)_(?:test|live|prod)_[A-Za-z0-9]{10,99}\b",
        priority=90,
        source="gitleaks stripe-access-token",
        prefilter=r"(?:sk|rk)_(?:test|live|prod)_[A-Za-z0-9]{10}",
    ),
    # JWTs — gitleaks "jwt", with the header decoded as the validator.
    Rule(
        "jwt",
        "secret",
        r"\bey[A-Za-z0-9_-]{10,}\.ey[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]*",
        validator=jwt_ok,
        priority=75,
        source="gitleaks jwt",
        prefilter=r"ey[A-Za-z0-9_-]{10,}\.ey",
    ),
    Rule(
        "bearer_token",
        "secret",
        r"\bbearer\s+([A-Za-z0-9._~+/-]{20,}=*)",
        caseless=True,
        group=1,
        validator=lambda s: looks_random(s, 3.0),
        priority=60,
        source="gitleaks curl-auth-header (Bearer form)",
        prefilter=r"bearer\s+[A-Za-z0-9._~+/-]{20}",
    ),
    # Passwords in URLs and connection strings — detect-secrets basic_auth.py (://user:pass@host);
    # key=value passwords after gitleaks generic-api-key / database-password, with its allowlist spirit.
    Rule(
        "url_password",
        "secret",
        r"\b[A-Za-z][A-Za-z0-9+.-]{1,20}://[^\s:/@'\"]{0,128}:([^\s@/'\"]{1,256})@[^\s/'\"@]+",
        group=1,
        validator=lambda s: s not in ("password", "pass", "***", "xxx") and not s.startswith("$"),
        priority=88,
        source="detect-secrets basic_auth.py",
        prefilter=r"://[^\s:/@'\"]{0,128}:[^\s@/'\"]{1,256}@",
    ),
    Rule(
        "password_assignment",
        "secret",
        r"(?:password|passwd|pwd|secret|client_secret|api_?key|access_token|auth_token)\\{0,2}[\"']?\s*(?:=|:)\s*"
        r"\\{0,2}[\"']?([^\s\"'\\;,]{6,128})",
        caseless=True,
        group=1,
        validator=secret_value_ok,
        priority=20,
        source="gitleaks generic-api-key / database-password",
        prefilter=r"(?:password|passwd|pwd|secret|client_secret|api_?key|access_token|auth_token)\\{0,2}[\"']?\s*[:=]",
    ),
    # PII. Email: RFC 5322 practical subset.
    Rule(
        "email",
        "pii",
        r"\b[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*\.[A-Za-z]{2,24}\b",
        validator=email_ok,
        priority=30,
        source="RFC 5322 practical subset",
        prefilter=r"[A-Za-z0-9._%+-]@[A-Za-z0-9-]+\.[A-Za-z0-9-]",
    ),
    # Payment cards: 13-19 digits with optional space/dash grouping, IIN prefix and Luhn check.
    Rule(
        "credit_card",
        "pii",
        # Not glued to letters or digits: a digit run inside a hex digest passes Luhn 1 time in 10.
        # The run may be longer than a card: `parts` finds the card inside it.
        r"(?<![0-9A-Za-z.-])\d(?:[ -]?\d){12,79}(?![0-9A-Za-z-])",
        validator=card_text_ok,
        parts=card_parts,
        priority=45,
        source="ISO/IEC 7812 (IIN ranges) + Luhn",
        prefilter=r"\d(?:[ -]?\d){12}",
    ),
    # US SSN with dashes (bare 9 digits are too ambiguous) — SSA validity rules.
    Rule(
        "us_ssn",
        "pii",
        r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])",
        validator=ssn_ok,
        priority=40,
        source="SSA SSN format",
        prefilter=r"\d{3}-\d{2}-\d{4}",
    ),
    # IBAN — ISO 13616, mod-97 check.
    Rule(
        "iban",
        "pii",
        r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b",
        validator=iban_ok,
        priority=45,
        source="ISO 13616 + mod-97",
        prefilter=r"[A-Z]{2}\d{2} ?[A-Z0-9]{4} ?[A-Z0-9]{4}",
    ),
    # Phones: E.164 (+CC ...) or NANP with separators; bare digit runs are not phones (order numbers).
    Rule(
        "phone",
        "pii",
        r"(?<![\w+])(?:\+[1-9]\d{0,2}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){2,4}"
        r"|\(?[2-9]\d{2}\)?[ .-]\d{3}[ .-]\d{4}|\([2-9]\d{2}\)\d{3}-\d{4})(?![\w-])",
        validator=phone_ok,
        priority=35,
        source="ITU-T E.164 / NANP formats",
        prefilter=r"\+[1-9]|[\d)][ .-]\d{3}[ .-]\d{4}|\)\d{3}-\d{4}",
    ),
)

RULES_BY_ID: dict[str, Rule] = {r.id: r for r in RULES}
