"""A subscriber written the way an integration team would: Microsoft's azure-servicebus SDK.

Usage:
  subscriber.py receive      --topic T --subscription S --count N [--sessions] [--wait SECONDS]
  subscriber.py deadletter   --topic T --subscription S --count N --reason R --description D
Environment: SB_CONNECTION_STRING.

`receive` prints one JSON object per message (what the SDK handed over: message id, session id,
subject, content type, application properties with their Python types, body, delivery count) and
completes it. `deadletter` receives messages and dead-letters them with the reason. Both exit
non-zero if fewer than N messages arrive within the wait.
"""

import argparse
import json
import os
import sys

from azure.servicebus import NEXT_AVAILABLE_SESSION, ServiceBusClient
from azure.servicebus.exceptions import OperationTimeoutError


def text(v):
    return v.decode("utf-8") if isinstance(v, bytes) else v


def describe(msg):
    props = {}
    for k, v in (msg.application_properties or {}).items():
        v = text(v)
        props[text(k)] = {"type": type(v).__name__, "value": v}
    return {
        "message_id": msg.message_id,
        "session_id": msg.session_id,
        "subject": msg.subject,
        "content_type": msg.content_type,
        "application_properties": props,
        "body": json.loads(b"".join(msg.body).decode("utf-8")),
        "delivery_count": msg.delivery_count,
        "enqueued_time": msg.enqueued_time_utc.isoformat() if msg.enqueued_time_utc else None,
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("command", choices=["receive", "deadletter"])
    p.add_argument("--topic", required=True)
    p.add_argument("--subscription", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--sessions", action="store_true")
    p.add_argument("--wait", type=float, default=20)
    p.add_argument("--reason", default="")
    p.add_argument("--description", default="")
    a = p.parse_args()
    got = 0
    with ServiceBusClient.from_connection_string(os.environ["SB_CONNECTION_STRING"]) as client:
        while got < a.count:
            kwargs = {"max_wait_time": a.wait}
            if a.sessions:
                kwargs["session_id"] = NEXT_AVAILABLE_SESSION
            try:
                receiver = client.get_subscription_receiver(a.topic, a.subscription, **kwargs)
                with receiver:
                    batch_total = 0
                    for msg in receiver:
                        if a.command == "receive":
                            print(json.dumps(describe(msg), ensure_ascii=False), flush=True)
                            receiver.complete_message(msg)
                        else:
                            receiver.dead_letter_message(msg, reason=a.reason, error_description=a.description)
                            print(json.dumps({"dead_lettered": msg.message_id}), flush=True)
                        got += 1
                        batch_total += 1
                        if got >= a.count:
                            break
                    if batch_total == 0:
                        break
            except OperationTimeoutError:
                break
    if got < a.count:
        print(f"FAIL: received {got} of {a.count} messages", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
