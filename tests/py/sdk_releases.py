"""Enqueues an already queued task with the official Python SDK (clearml==2.1.12) against the
ClearML API double playing one clearml-server release.

Run by tests/doubles/tests/clearml_double/sdk.rs (sdk_enqueue_of_a_queued_task_per_release)
with the double's address in CLEARML_API_HOST and credentials in CLEARML_API_ACCESS_KEY /
CLEARML_API_SECRET_KEY. It creates a task, enqueues it into queue A with Task.enqueue, enqueues
it again into queue B with Task.enqueue (which raises SendError on a refusal), then sends a forced
tasks.enqueue into queue C through the SDK's raw request path (the SDK's typed EnqueueRequest has
no `force`), and prints one JSON object on the last line of stdout: what each call answered, the
queues' entries read through APIClient, the task's status and execution.queue, and the server
version the SDK read from its token.
"""

import json
import sys

from clearml import Task
from clearml.backend_api import Session
from clearml.backend_api.session.client import APIClient


def entries(client: APIClient, queue_id: str) -> list:
    queue = client.queues.get_by_id(queue=queue_id)
    return [e.task for e in (queue.entries or [])]


def main() -> int:
    client = APIClient()
    queues = {
        name: client.queues.create(name=name).id for name in ("sdk-rel-a", "sdk-rel-b", "sdk-rel-c")
    }
    task = Task.create(project_name="sdk-releases", task_name="sdk-rel-task")
    Task.enqueue(task, queue_id=queues["sdk-rel-a"])

    try:
        Task.enqueue(task, queue_id=queues["sdk-rel-b"])
        plain = "ok"
    except Exception as e:  # the SDK raises SendError with the server's message
        plain = str(e)

    session = Task._get_default_session()
    res = session.send_request(
        service="tasks",
        action="enqueue",
        json={
            "task": task.id,
            "queue": queues["sdk-rel-c"],
            "force": True,
            "status_reason": "k8s pending scheduler",
            "status_message": "forced by the SDK",
        },
    )
    forced = {"status": res.status_code, "result_msg": res.json()["meta"]["result_msg"]}

    got = client.tasks.get_all(
        id=[task.id], only_fields=["id", "status", "status_message", "execution.queue"]
    )[0]
    report = {
        "task_id": task.id,
        "server_version": Session.server_version,
        "api_version": Session.api_version,
        "plain": plain,
        "forced": forced,
        "entries": {name: entries(client, qid) for name, qid in queues.items()},
        "status": str(got.status),
        "status_message": got.status_message,
        "execution_queue_is_c": got.execution.queue == queues["sdk-rel-c"],
    }
    print(json.dumps(report, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
