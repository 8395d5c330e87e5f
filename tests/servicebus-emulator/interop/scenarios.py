"""Interop scenarios: Microsoft's azure-servicebus SDK against the emulator.

Usage: python scenarios.py SCENARIO
Environment: SB_CONNECTION_STRING (a UseDevelopmentEmulator=true connection string).
Each scenario asserts and exits non-zero with a FAIL line on the first mismatch.
"""

import datetime
import os
import sys
import time
import traceback
import uuid

from azure.servicebus import (
    NEXT_AVAILABLE_SESSION,
    AutoLockRenewer,
    ServiceBusClient,
    ServiceBusMessage,
    ServiceBusReceiveMode,
    ServiceBusSubQueue,
)
from azure.servicebus.exceptions import ServiceBusError

CONN = os.environ.get("SB_CONNECTION_STRING", "")
TOPIC = "api.event.contact"
SCENARIOS = {}


class Failure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)
    print(f"  ok: {what}")


def scenario(fn):
    SCENARIOS[fn.__name__] = fn
    return fn


def client(conn=CONN, **kwargs):
    return ServiceBusClient.from_connection_string(conn, logging_enable=False, **kwargs)


def text(v):
    return v.decode("utf-8") if isinstance(v, bytes) else v


def props(msg):
    return {text(k): v for k, v in (msg.application_properties or {}).items()}


def body(msg):
    return b"".join(msg.body).decode("utf-8")


def drain(receiver, wait=1):
    got = receiver.receive_messages(max_message_count=50, max_wait_time=wait)
    for m in got:
        receiver.complete_message(m)
    return got


def receive_n(receiver, n, wait=5):
    out = []
    deadline = time.time() + wait
    while len(out) < n and time.time() < deadline:
        out += receiver.receive_messages(max_message_count=n - len(out), max_wait_time=1)
    return out


WHEN = datetime.datetime(2024, 5, 17, 12, 30, 45, 123000, tzinfo=datetime.timezone.utc)
UID = uuid.UUID("12345678-1234-5678-9abc-def012345678")
APP_PROPS = {
    "name": "Bjørn Ærøskøbing — 東京 ✓",
    "int": 42,
    "negative": -7,
    "max_int": 2**31 - 1,  # the SDK encodes Python ints as AMQP int (32-bit)
    "float": 3.25,
    "bool": True,
    "false": False,
    "uuid": UID,
    "when": WHEN,
}
# The SDK turns bytes property values into str (UTF-8) before sending, so binary application
# properties cannot be sent from Python; every other simple type is covered above.


def check_app_props(p, where):
    check(text(p["name"]) == APP_PROPS["name"], f"{where}: non-ASCII string property intact")
    check(p["int"] == 42 and p["negative"] == -7 and p["max_int"] == 2**31 - 1, f"{where}: integer properties intact")
    check(p["float"] == 3.25, f"{where}: float property intact")
    check(p["bool"] is True and p["false"] is False, f"{where}: bool properties intact")
    check(p["uuid"] == UID, f"{where}: uuid property intact ({p['uuid']!r})")
    when = p["when"]
    if isinstance(when, int):  # pyamqp may surface timestamps as ms since epoch
        when = datetime.datetime.fromtimestamp(when / 1000, tz=datetime.timezone.utc)
    check(when == WHEN, f"{where}: timestamp property intact ({p['when']!r})")


@scenario
def topic_fanout():
    """Single and batch sends to a topic; both subscriptions get every message intact."""
    run = uuid.uuid4().hex[:8]
    with client() as sb:
        with sb.get_topic_sender(TOPIC) as sender:
            sender.send_messages(
                ServiceBusMessage(
                    '{"greeting": "héllo wörld 🌍"}',
                    application_properties=APP_PROPS,
                    message_id=f"{run}-single",
                    content_type="application/json",
                    subject="contact.updated",
                    correlation_id="corr-1",
                )
            )
            batch = sender.create_message_batch()
            for i in range(3):
                batch.add_message(
                    ServiceBusMessage(
                        f'{{"n": {i}, "name": "Zoë"}}',
                        application_properties=APP_PROPS,
                        message_id=f"{run}-batch-{i}",
                        content_type="application/json",
                    )
                )
            sender.send_messages(batch)
        for sub in ("sub-a", "sub-b"):
            with sb.get_subscription_receiver(TOPIC, sub, max_wait_time=5) as r:
                got = receive_n(r, 4)
                check(len(got) == 4, f"{sub}: received all 4 messages (got {len(got)})")
                by_id = {str(m.message_id): m for m in got}
                single = by_id[f"{run}-single"]
                check(body(single) == '{"greeting": "héllo wörld 🌍"}', f"{sub}: non-ASCII body intact")
                check(single.content_type == "application/json", f"{sub}: content type intact")
                check(single.subject == "contact.updated", f"{sub}: subject intact")
                check(single.correlation_id == "corr-1", f"{sub}: correlation id intact")
                check(single.sequence_number is not None and single.sequence_number > 0, f"{sub}: sequence number annotated")
                check(single.enqueued_time_utc is not None, f"{sub}: enqueued time annotated")
                check(single.locked_until_utc is not None, f"{sub}: locked-until annotated")
                check(single.lock_token is not None and len(str(single.lock_token)) == 36, f"{sub}: lock token is a GUID")
                for i in range(3):
                    m = by_id[f"{run}-batch-{i}"]
                    check(body(m) == f'{{"n": {i}, "name": "Zoë"}}', f"{sub}: batch message {i} body intact")
                    check_app_props(props(m), f"{sub} batch {i}")
                check_app_props(props(single), f"{sub} single")
                for m in got:
                    r.complete_message(m)
                check(drain(r) == [], f"{sub}: nothing left after completing")
        with sb.get_subscription_receiver(TOPIC, "only-high", max_wait_time=1) as r:
            check(drain(r) == [], "only-high: correlation filter excluded messages without priority=high")


@scenario
def topic_filter():
    """Correlation and SQL filter subscriptions only receive matching messages; $Default gets all."""
    with client() as sb:
        with sb.get_topic_sender(TOPIC) as s:
            s.send_messages([
                ServiceBusMessage("low", subject="contact.updated", application_properties={"priority": "low"}),
                ServiceBusMessage("high", subject="contact.updated", application_properties={"priority": "high"}),
                ServiceBusMessage("high-order", subject="order.created", application_properties={"priority": "high"}),
            ])
        expected = {"only-high": ["high", "high-order"], "sql-contacts": ["high"]}
        for sub, want in expected.items():
            with sb.get_subscription_receiver(TOPIC, sub, max_wait_time=3) as r:
                got = receive_n(r, len(want))
                got += r.receive_messages(max_wait_time=1)
                check(sorted(body(m) for m in got) == sorted(want), f"{sub} got exactly {want} ({[body(m) for m in got]})")
                for m in got:
                    r.complete_message(m)
        for sub in ("sub-a", "sub-b"):
            with sb.get_subscription_receiver(TOPIC, sub, max_wait_time=3) as r:
                got = receive_n(r, 3)
                check(len(got) == 3, f"{sub} got all three messages ($Default rule)")
                for m in got:
                    r.complete_message(m)


@scenario
def complete_abandon():
    """Abandon redelivers with delivery count + 1; complete removes."""
    with client() as sb:
        with sb.get_queue_sender("orders") as s:
            s.send_messages(ServiceBusMessage("abandon-me", message_id="a1"))
        with sb.get_queue_receiver("orders", max_wait_time=5) as r:
            (m,) = receive_n(r, 1)
            first = m.delivery_count
            check(body(m) == "abandon-me", "received the message")
            r.abandon_message(m)
            (m2,) = receive_n(r, 1)
            check(m2.message_id == "a1", "abandoned message redelivered")
            check(m2.delivery_count == first + 1, f"delivery count incremented ({first} -> {m2.delivery_count})")
            check(m2.lock_token != m.lock_token, "redelivery has a new lock token")
            r.complete_message(m2)
            check(drain(r) == [], "queue empty after complete")


@scenario
def dead_letter():
    """Dead-letter with reason and description; receive it from the DLQ."""
    with client() as sb:
        with sb.get_queue_sender("orders") as s:
            s.send_messages(ServiceBusMessage("poison", message_id="dl1", application_properties={"k": "v"}))
        with sb.get_queue_receiver("orders", max_wait_time=5) as r:
            (m,) = receive_n(r, 1)
            r.dead_letter_message(m, reason="bad-data", error_description="field 'x' is missing")
            check(drain(r) == [], "message left the queue")
        with sb.get_queue_receiver("orders", sub_queue=ServiceBusSubQueue.DEAD_LETTER, max_wait_time=5) as r:
            (d,) = receive_n(r, 1)
            check(d.message_id == "dl1" and body(d) == "poison", "dead-lettered message received from the DLQ")
            check(d.dead_letter_reason == "bad-data", f"DeadLetterReason ({d.dead_letter_reason!r})")
            check(d.dead_letter_error_description == "field 'x' is missing", f"DeadLetterErrorDescription ({d.dead_letter_error_description!r})")
            check(text(props(d)["k"]) == "v", "original properties kept")
            check(d.dead_letter_source == "orders", f"dead-letter source ({d.dead_letter_source!r})")
            r.complete_message(d)
            check(drain(r) == [], "DLQ empty after complete")
        # The same through a subscription and its dead-letter queue.
        with sb.get_topic_sender(TOPIC) as s:
            s.send_messages(ServiceBusMessage("sub-poison", message_id="dl2"))
        with sb.get_subscription_receiver(TOPIC, "sub-a", max_wait_time=5) as r:
            (m,) = receive_n(r, 1)
            r.dead_letter_message(m, reason="sub-reason", error_description="sub description")
        with sb.get_subscription_receiver(TOPIC, "sub-a", sub_queue=ServiceBusSubQueue.DEAD_LETTER, max_wait_time=5) as r:
            (d,) = receive_n(r, 1)
            check(body(d) == "sub-poison", "dead-lettered message received from the subscription's DLQ")
            check((d.dead_letter_reason, d.dead_letter_error_description) == ("sub-reason", "sub description"), "subscription DLQ reason and description")
            r.complete_message(d)
        with sb.get_subscription_receiver(TOPIC, "sub-b", max_wait_time=5) as r:
            got = receive_n(r, 1)
            check([body(m) for m in got] == ["sub-poison"], "the other subscription's copy is unaffected")
            r.complete_message(got[0])


@scenario
def lock_expiry():
    """An unsettled message whose lock expires is redelivered with delivery count + 1."""
    with client() as sb:
        with sb.get_queue_sender("shortlock") as s:
            s.send_messages(ServiceBusMessage("slow", message_id="le1"))
        with sb.get_queue_receiver("shortlock", max_wait_time=5) as r:
            (m,) = receive_n(r, 1)
            time.sleep(4.5)  # lock duration is PT3S
            (m2,) = receive_n(r, 1, wait=6)
            check(m2.message_id == "le1", "message redelivered after lock expiry")
            check(m2.delivery_count == m.delivery_count + 1, f"delivery count incremented ({m.delivery_count} -> {m2.delivery_count})")
            try:
                r.complete_message(m)
                check(False, "completing with the expired lock fails")
            except ServiceBusError as e:
                check(True, f"completing with the expired lock fails ({type(e).__name__})")
            r.complete_message(m2)


@scenario
def max_delivery():
    """Exceeding MaxDeliveryCount moves the message to the DLQ with MaxDeliveryCountExceeded."""
    with client() as sb:
        with sb.get_queue_sender("maxdelivery") as s:
            s.send_messages(ServiceBusMessage("hot potato", message_id="md1"))
        with sb.get_queue_receiver("maxdelivery", max_wait_time=3) as r:
            for attempt in range(2):  # MaxDeliveryCount = 2
                (m,) = receive_n(r, 1)
                r.abandon_message(m)
            check(drain(r) == [], "message no longer in the queue")
        with sb.get_queue_receiver("maxdelivery", sub_queue=ServiceBusSubQueue.DEAD_LETTER, max_wait_time=5) as r:
            (d,) = receive_n(r, 1)
            check(d.message_id == "md1", "message in the DLQ")
            check(d.dead_letter_reason == "MaxDeliveryCountExceeded", f"reason ({d.dead_letter_reason!r})")
            check(d.dead_letter_error_description == "Message couldn't be consumed after maximum delivery attempts.", "description")
            r.complete_message(d)


@scenario
def duplicate_detection():
    """A repeated MessageId within the window is dropped."""
    with client() as sb:
        with sb.get_queue_sender("dedup") as s:
            s.send_messages(ServiceBusMessage("one", message_id="dup-1"))
            s.send_messages(ServiceBusMessage("one again", message_id="dup-1"))
            s.send_messages(ServiceBusMessage("two", message_id="dup-2"))
        with sb.get_queue_receiver("dedup", max_wait_time=2) as r:
            got = drain(r, 2)
            got += drain(r, 1)
            check(sorted(body(m) for m in got) == ["one", "two"], f"duplicate dropped ({[body(m) for m in got]})")


@scenario
def sessions():
    """Messages of each session arrive in order; session state round-trips."""
    with client() as sb:
        with sb.get_queue_sender("sessions") as s:
            for i in range(5):
                for sid in ("s1", "s2"):
                    s.send_messages(ServiceBusMessage(f"{sid}-{i}", session_id=sid))
        with sb.get_queue_receiver("sessions", session_id="s1", max_wait_time=3) as r:
            got = receive_n(r, 5)
            check([body(m) for m in got] == [f"s1-{i}" for i in range(5)], f"s1 in order ({[body(m) for m in got]})")
            check(all(m.session_id == "s1" for m in got), "session id on messages")
            r.session.set_state(b"checkpoint-5")
            check(r.session.get_state() == b"checkpoint-5", "session state round-trips")
            r.session.renew_lock()
            for m in got:
                r.complete_message(m)
        with sb.get_queue_receiver("sessions", session_id=NEXT_AVAILABLE_SESSION, max_wait_time=3) as r:
            check(r.session.session_id == "s2", f"next available session is s2 ({r.session.session_id})")
            got = receive_n(r, 5)
            check([body(m) for m in got] == [f"s2-{i}" for i in range(5)], "s2 in order")
            for m in got:
                r.complete_message(m)


@scenario
def session_wait():
    """A next-available-session receiver waits for a session to appear, or times out."""
    import threading

    def send_later():
        time.sleep(1.5)
        with client() as sb2, sb2.get_queue_sender("sessions") as s:
            s.send_messages(ServiceBusMessage("late", session_id="late-session"))

    t = threading.Thread(target=send_later)
    t.start()
    with client() as sb:
        with sb.get_queue_receiver("sessions", session_id=NEXT_AVAILABLE_SESSION, max_wait_time=15) as r:
            check(r.session.session_id == "late-session", f"waited for the session ({r.session.session_id})")
            got = receive_n(r, 1)
            check([body(m) for m in got] == ["late"], "received its message")
            r.complete_message(got[0])
        t.join()
    with client(retry_total=0) as sb:
        started = time.time()
        try:
            with sb.get_queue_receiver("sessions", session_id=NEXT_AVAILABLE_SESSION, max_wait_time=2) as r:
                r.receive_messages(max_wait_time=1)
            check(False, "no session available times out")
        except ServiceBusError as e:
            check(True, f"no session available times out ({type(e).__name__} after {time.time() - started:.1f} s)")


@scenario
def oversize():
    """The 256 KB limit is enforced by the emulator; a 200 KB message goes through."""
    from azure.servicebus.exceptions import MessageSizeExceededError

    with client() as sb:
        with sb.get_queue_sender("orders") as s:
            try:
                s.send_messages(ServiceBusMessage("x" * 300_000))
                check(False, "a 300 KB message is refused")
            except MessageSizeExceededError as e:
                check(True, f"a 300 KB message is refused ({type(e).__name__}: {str(e)[:80]})")
        # The service detaches the link on an oversize delivery; the SDK wants a new sender.
        with sb.get_queue_sender("orders") as s:
            s.send_messages(ServiceBusMessage("y" * 200_000))
        with sb.get_queue_receiver("orders", max_wait_time=5) as r:
            got = receive_n(r, 1)
            check(len(got) == 1 and body(got[0]) == "y" * 200_000, "a 200 KB message arrives intact (multi-frame transfers)")
            r.complete_message(got[0])


@scenario
def peek():
    """Peek returns messages without locking them, in sequence order."""
    with client() as sb:
        with sb.get_queue_sender("orders") as s:
            s.send_messages([ServiceBusMessage(f"peek-{i}") for i in range(3)])
        with sb.get_queue_receiver("orders", max_wait_time=3) as r:
            peeked = r.peek_messages(max_message_count=10)
            check([body(m) for m in peeked] == ["peek-0", "peek-1", "peek-2"], f"peeked 3 in order ({[body(m) for m in peeked]})")
            seqs = [m.sequence_number for m in peeked]
            check(seqs == sorted(seqs) and len(set(seqs)) == 3, f"sequence numbers ascending ({seqs})")
            more = r.peek_messages(max_message_count=10)
            check(more == [], "a second peek continues after the last one")
            got = receive_n(r, 3)
            check(len(got) == 3, "peeked messages still receivable")
            for m in got:
                r.complete_message(m)


@scenario
def schedule():
    """Scheduled messages (management op and message property, queue and topic) appear at their
    time; cancelled ones never do."""
    with client() as sb:
        # Far enough ahead that opening the senders and management links cannot overtake it.
        at = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=8)
        with sb.get_queue_sender("orders") as s:
            seq_keep = s.schedule_messages(ServiceBusMessage("later", message_id="sch-1"), at)
            seq_cancel = s.schedule_messages(ServiceBusMessage("never", message_id="sch-2"), at)
            check(len(seq_keep) == 1 and len(seq_cancel) == 1, f"sequence numbers returned ({seq_keep}, {seq_cancel})")
            s.cancel_scheduled_messages(seq_cancel[0])
            s.send_messages(ServiceBusMessage("by-property", message_id="sch-3", scheduled_enqueue_time_utc=at))
        with sb.get_topic_sender(TOPIC) as s:
            t_keep = s.schedule_messages(ServiceBusMessage("topic-later", message_id="tsch-1"), at)
            t_cancel = s.schedule_messages(ServiceBusMessage("topic-never", message_id="tsch-2"), at)
            s.cancel_scheduled_messages(t_cancel)
            check(t_keep != t_cancel, f"topic sequence numbers differ ({t_keep}, {t_cancel})")
        with sb.get_queue_receiver("orders", max_wait_time=1) as r:
            early = r.receive_messages(max_wait_time=1)
            check(early == [], f"nothing before the scheduled time ({[body(m) for m in early]})")
            peeked = r.peek_messages(max_message_count=10)
            check(sorted(body(m) for m in peeked) == ["by-property", "later"], f"scheduled messages visible to peek ({[body(m) for m in peeked]})")
            check(all(m.state.name == "SCHEDULED" for m in peeked), f"peeked state is SCHEDULED ({[m.state for m in peeked]})")
            time.sleep(max(0.0, (at - datetime.datetime.now(datetime.timezone.utc)).total_seconds()) + 0.5)
            got = receive_n(r, 2, wait=5)
            check(sorted(body(m) for m in got) == ["by-property", "later"], f"scheduled messages delivered after their time ({[body(m) for m in got]})")
            for m in got:
                r.complete_message(m)
            check(drain(r) == [], "cancelled message never delivered")
        for sub in ("sub-a", "sub-b"):
            with sb.get_subscription_receiver(TOPIC, sub, max_wait_time=3) as r:
                got = receive_n(r, 1)
                got += r.receive_messages(max_wait_time=1)
                check([body(m) for m in got] == ["topic-later"], f"{sub}: scheduled topic message delivered, cancelled one not ({[body(m) for m in got]})")
                r.complete_message(got[0])


@scenario
def renew_lock():
    """renew_message_lock and AutoLockRenewer keep a short lock alive."""
    with client() as sb:
        with sb.get_queue_sender("shortlock") as s:
            s.send_messages([ServiceBusMessage("manual"), ServiceBusMessage("auto")])
        with sb.get_queue_receiver("shortlock", max_wait_time=5) as r:
            got = receive_n(r, 2)
            check(len(got) == 2, "received both")
            manual, auto = got
            renewer = AutoLockRenewer(max_lock_renewal_duration=30)
            renewer.register(r, auto)
            before = manual.locked_until_utc
            for _ in range(6):  # 6 s total with a 3 s lock
                time.sleep(1)
                until = r.renew_message_lock(manual)
            check(until > before, "renew_message_lock extended locked_until")
            r.complete_message(manual)
            check(True, "complete after manual renewals succeeded")
            r.complete_message(auto)
            check(True, "complete after AutoLockRenewer succeeded")
            renewer.close()
            check(drain(r) == [], "nothing redelivered")


@scenario
def defer():
    """Deferred messages are received by sequence number."""
    with client() as sb:
        with sb.get_queue_sender("orders") as s:
            s.send_messages(ServiceBusMessage("defer-me"))
        with sb.get_queue_receiver("orders", max_wait_time=3) as r:
            (m,) = receive_n(r, 1)
            seq = m.sequence_number
            r.defer_message(m)
            check(drain(r) == [], "deferred message not delivered normally")
            (d,) = r.receive_deferred_messages([seq])
            check(body(d) == "defer-me", "deferred message received by sequence number")
            r.complete_message(d)


@scenario
def receive_and_delete():
    """RECEIVE_AND_DELETE removes messages on delivery."""
    with client() as sb:
        with sb.get_queue_sender("orders") as s:
            s.send_messages(ServiceBusMessage("gone"))
        with sb.get_queue_receiver("orders", receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE, max_wait_time=3) as r:
            got = receive_n(r, 1)
            check([body(m) for m in got] == ["gone"], "received")
            check(r.receive_messages(max_wait_time=1) == [], "not redelivered")


@scenario
def ttl_dead_letter():
    """An expired message moves to the DLQ when DeadLetteringOnMessageExpiration is set."""
    with client() as sb:
        with sb.get_queue_sender("expiring") as s:
            s.send_messages(ServiceBusMessage("stale", message_id="ttl1"))
        time.sleep(2)
        with sb.get_queue_receiver("expiring", max_wait_time=1) as r:
            check(r.receive_messages(max_wait_time=1) == [], "expired message not delivered")
        with sb.get_queue_receiver("expiring", sub_queue=ServiceBusSubQueue.DEAD_LETTER, max_wait_time=3) as r:
            (d,) = receive_n(r, 1)
            check(d.dead_letter_reason == "TTLExpiredException", f"reason ({d.dead_letter_reason!r})")
            r.complete_message(d)


@scenario
def wrong_key():
    """A SAS token signed with the wrong key is refused."""
    bad = CONN.replace("SharedAccessKey=", "SharedAccessKey=WRONG")
    try:
        with client(bad) as sb:
            with sb.get_queue_sender("orders") as s:
                s.send_messages(ServiceBusMessage("must not arrive"))
        check(False, "send with a wrong key fails")
    except ServiceBusError as e:
        check(True, f"send with a wrong key fails ({type(e).__name__}: {str(e)[:120]})")
    with client() as sb:
        with sb.get_queue_receiver("orders", max_wait_time=1) as r:
            check(r.receive_messages(max_wait_time=1) == [], "nothing was enqueued")


def main():
    if sys.argv[1:] == ["--list"]:
        print("\n".join(SCENARIOS))
        return 0
    if len(sys.argv) != 2 or sys.argv[1] not in SCENARIOS:
        print(f"usage: scenarios.py {{{'|'.join(SCENARIOS)}}}", file=sys.stderr)
        return 2
    name = sys.argv[1]
    print(f"scenario {name}: {SCENARIOS[name].__doc__}")
    try:
        SCENARIOS[name]()
    except Failure as f:
        print(f"FAIL: {name}: {f}")
        return 1
    except Exception:  # pylint: disable=broad-except
        traceback.print_exc()
        print(f"FAIL: {name}: unexpected exception")
        return 1
    print(f"PASS: {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
