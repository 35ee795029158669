"""The demo's workload: a day of support chat for a made-up SaaS company, reproducible from a seed.

:func:`build_workload` gives ``users`` conversations of ``turns`` user turns each, with what makes
real support traffic expensive: a long system prompt sent on every call, histories that keep
growing, the same few questions asked by many users (in their own casing and punctuation),
pasted logs full of whitespace, and a mix of simple questions and hard ones. A few heavy users
ask mostly hard questions, so their daily budgets run down. :func:`reply_to` gives the
assistant's deterministic answer, short for simple questions and long for hard ones.
Everything here is plain data: the demo pipelines (LangChain, or live providers) replay it.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from .errors import InvalidInputError

__all__ = ["SYSTEM_PROMPT", "Turn", "Workload", "build_workload", "reply_to"]

Complexity = Literal["simple", "complex"]

_POLICIES = [
    "Refunds: annual plans are refundable pro rata within 30 days of renewal; monthly plans are not "
    "refundable, but a cancelled plan stays active until the end of the paid period.",
    "Storage: Starter includes 50 GB, Team 1 TB and Enterprise 10 TB per workspace; extra storage is "
    "billed at $0.02 per GB-month and counted daily at 00:00 UTC.",
    "Seats: seats can be added at any time and are billed pro rata; removing a seat takes effect at the "
    "next renewal. Guests are free and cannot own projects.",
    "Security: SSO (SAML and OIDC) is on Team and Enterprise; SCIM provisioning on Enterprise only. "
    "Never ask a customer for their password or a full API key; ask for the key's last four characters.",
    "Outages: check status.acme.example before troubleshooting; during an incident, link the incident "
    "page, do not promise a resolution time, and offer to notify the customer when it is resolved.",
    "Data export: workspace admins can export all projects as JSON or CSV from Settings > Export; "
    "exports over 5 GB are split into parts and the download links expire after 7 days.",
    "API limits: 600 requests per minute per workspace on Team, 3,000 on Enterprise; a 429 response "
    "carries a Retry-After header in seconds. Webhooks retry 8 times with exponential backoff.",
    "Escalation: billing disputes over $500, suspected account compromise and legal requests go to a "
    "human agent; say that a specialist will reply by email within one business day.",
    "Tone: be concise and friendly, answer the question first, then give the one next step; use "
    "numbered steps for procedures and code blocks for commands; never invent features.",
    "Regions: workspaces are hosted in us-east, eu-west or ap-south; moving a workspace between "
    "regions is an Enterprise service that takes 2-5 business days and needs a maintenance window.",
]

SYSTEM_PROMPT = (
    "You are Acme Cloud's support assistant. Acme Cloud is a project-management and file-storage "
    "service for teams. Answer from the policies below; when they do not cover a question, say so and "
    "offer to escalate.\n\n" + "\n".join(f"{i + 1}. {p}" for i, p in enumerate(_POLICIES * 3))
)
"""The long system prompt sent with every call (the policies, repeated as a real one would be)."""

# Questions many users ask, each in a few phrasings (casing, punctuation), all simple.
_FAQ = [
    ("How do I export my workspace?", "how do i export my workspace", "How do I export my workspace??"),
    ("What is the storage limit on Team?", "what is the storage limit on team", "Storage limit on Team?"),
    (
        "Can I get a refund on a monthly plan?",
        "can I get a refund on a monthly plan?",
        "Refund on monthly plan?",
    ),
    ("How do I add a seat?", "how do I add a seat?", "HOW DO I ADD A SEAT?"),
    ("Is SSO available on Starter?", "is sso available on starter", "Is SSO available on Starter ?"),
    ("What does a 429 error mean?", "what does a 429 error mean?", "What does a 429 error mean"),
    ("Where is the status page?", "where is the status page?", "Where is the status page"),
    ("How long do export links last?", "how long do export links last", "How long do export links last?!"),
]

# Questions about the user's own account: their details make each one different.
_SIMPLE = [
    "Can guests own projects in the {project} workspace?",
    "Which regions can I host {project} in?",
    "How many API requests per minute do we get on Enterprise with {seats} seats?",
    "Do webhooks to {host} retry when they fail?",
    "Is SCIM included in the Team plan for our {seats} seats?",
    "When is extra storage counted for {project}?",
    "Can I remove {n} seats today?",
    "What happens to the {project} data when I cancel?",
    "Thanks, that fixed {project}!",
    "Where do I find Settings > Export for {project}?",
]

_COMPLEX = [
    "Analyze our usage: we have {seats} seats, {tb} TB of storage and {calls} API calls a minute at peak. "
    "Compare Team and Enterprise for us over a year, including overage, and recommend one.",
    "Design a migration plan to move {project} from us-east to eu-west with minimal downtime, "
    "including how to keep webhooks to {host} and SSO working during the move.",
    "Debug this: our webhook consumer at {host} receives every event twice and sometimes out of order. "
    "Explain the likely causes given your retry policy and write an idempotent handler in Python.",
    "Implement a script that exports all {n} projects of {project}, splits the archive into 5 GB parts, "
    "verifies checksums and re-downloads any part whose link expired. Explain each step.",
    "We were charged twice after upgrading to {seats} seats mid-cycle and then removing {n}. Walk through "
    "the pro-rata maths for both changes and tell me what the correct invoice should be.",
    "Evaluate the trade-offs of SAML versus OIDC for our {seats}-person company using Okta and Azure AD, "
    "and design the rollout of {project} so nobody is locked out.",
]

_PROJECTS = ["Apollo", "Borealis", "Cobalt", "Delta", "Ember", "Fjord", "Granite", "Helix", "Iris", "Juniper"]

_LOG_LINES = [
    "2026-11-23T09:14:02Z   ERROR    webhook    delivery failed    status=503    attempt=3",
    "2026-11-23T09:14:09Z   WARN     api        rate limited       status=429    retry_after=12",
    "2026-11-23T09:15:40Z   ERROR    export     part 3 of 7        link expired  size=5.0GB",
    "2026-11-23T09:16:01Z   INFO     sso        assertion ok       idp=okta      user=jdoe",
]


@dataclass(frozen=True, kw_only=True, slots=True)
class Turn:
    """One user message of the workload."""

    user: str
    """The end user (``u01``...)."""
    conversation: str
    """The conversation it belongs to."""
    index: int
    """Its position in the conversation (0-based)."""
    text: str
    """What the user typed (or pasted)."""
    complexity: Complexity
    """``complex`` when a premium model is needed to answer well."""
    faq: bool
    """One of the questions many users ask (a cache can answer it)."""
    pasted_log: bool
    """The message carries a pasted log with padding whitespace (compression helps)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Workload:
    """The whole replay: conversations in the order they are played."""

    users: int
    turns_per_user: int
    seed: int
    conversations: tuple[tuple[Turn, ...], ...]

    @property
    def turns(self) -> int:
        """Number of user turns (model calls without controls)."""
        return sum(len(c) for c in self.conversations)


def build_workload(*, users: int = 50, turns: int = 20, seed: int = 7, heavy_share: float = 0.1) -> Workload:
    """The seeded workload: ``users`` conversations of ``turns`` user turns.

    Args:
        users: Number of users (one conversation each), 1 to 10,000.
        turns: User turns per conversation, 1 to 200.
        seed: The random seed (same seed, same workload).
        heavy_share: Share of users who mostly ask hard questions (their budgets run down).

    Raises:
        InvalidInputError: A figure is out of range.

    Example:
        >>> w = build_workload(users=3, turns=4)
        >>> w.turns, w.conversations[0][0].user
        (12, 'u01')
    """
    for name, value, high in (("users", users, 10_000), ("turns", turns, 200)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
            raise InvalidInputError(name, f"must be an integer from 1 to {high}", value=value)
    if isinstance(heavy_share, bool) or not isinstance(heavy_share, int | float) or not 0 <= heavy_share <= 1:
        raise InvalidInputError("heavy_share", "must be a share in [0, 1]", value=heavy_share)
    rng = random.Random(seed)
    width = max(2, len(str(users)))
    heavy = set(rng.sample(range(users), round(users * heavy_share)))
    conversations = []
    for u in range(users):
        user = f"u{u + 1:0{width}d}"
        p_complex = 0.6 if u in heavy else 0.12
        details = {
            "project": f"{rng.choice(_PROJECTS)}-{rng.randrange(100, 999)}",
            "host": f"hooks.{user}.example",
            "seats": rng.randrange(5, 400),
            "tb": round(rng.uniform(0.2, 9.5), 1),
            "calls": rng.randrange(200, 3000),
            "n": rng.randrange(2, 30),
        }
        # A user rarely asks the same thing about their account twice: go through the templates.
        easy, hard = _cycle(_SIMPLE, rng), _cycle(_COMPLEX, rng)
        convo = []
        for i in range(turns):
            roll = rng.random()
            if roll < p_complex:
                text, complexity, faq = next(hard).format(**details), "complex", False
            elif roll < p_complex + 0.35:
                text, complexity, faq = rng.choice(rng.choice(_FAQ)), "simple", True
            else:
                text, complexity, faq = next(easy).format(**details), "simple", False
            pasted = complexity == "complex" and rng.random() < 0.5
            if pasted:
                lines = [rng.choice(_LOG_LINES) for _ in range(8)]
                # Pasted from a terminal: aligned columns, trailing padding, blank lines between.
                text = f"{text}\n\nHere is the log:\n\n" + "\n\n\n".join(
                    "  " + ln.replace("   ", "         ") + " " * 12 for ln in lines
                )
            convo.append(
                Turn(
                    user=user,
                    conversation=f"{user}-c1",
                    index=i,
                    text=text,
                    complexity=complexity,  # type: ignore[arg-type]
                    faq=faq,
                    pasted_log=pasted,
                )
            )
        conversations.append(tuple(convo))
    return Workload(users=users, turns_per_user=turns, seed=seed, conversations=tuple(conversations))


def _cycle(items: list[str], rng: random.Random) -> Iterator[str]:
    """The items in a random order, reshuffled each time round."""
    while True:
        order = items[:]
        rng.shuffle(order)
        yield from order


_SIMPLE_REPLY = (
    "Sure! {answer} If anything else comes up, just ask here and I will point you to the right setting."
)
_COMPLEX_STEPS = [
    "First, I looked at the figures you gave against the plan limits in our policies.",
    "Second, the costs break down into seats, storage and API capacity; each is billed differently.",
    "Third, the risk is in the transition: webhooks retry 8 times, so consumers must be idempotent.",
    "Fourth, SSO keeps working if the identity provider's metadata is updated before the switch.",
    "Fifth, schedule the change in a maintenance window and tell your users a day ahead.",
    "Finally, here is a checklist you can follow, with the commands in the order to run them.",
]


def reply_to(turn: Turn) -> str:
    """The assistant's deterministic answer to ``turn`` (long and structured for hard questions)."""
    if turn.complexity == "simple":
        topic = turn.text.rstrip("?!. ").lower()
        return _SIMPLE_REPLY.format(answer=f"About {topic}: the policy above covers it in one line.")
    body = "\n".join(f"{i + 1}. {s}" for i, s in enumerate(_COMPLEX_STEPS))
    code = "```python\ndef handle(event):\n    if seen(event.id):\n        return\n    process(event)\n```"
    return f"Here is a careful answer.\n\n{body}\n\n{code}\n\n" + " ".join(_COMPLEX_STEPS) * 2
