"""Drives the ClearML API double with the official Python SDK (clearml==2.1.12).

Run by tests/doubles/tests/clearml_double.rs (sdk_fidelity test) with the double's address in
CLEARML_API_HOST and credentials in CLEARML_API_ACCESS_KEY / CLEARML_API_SECRET_KEY.
It creates two tasks the way a user would (Task.create with a docker image), enqueues one by
queue name and one into a queue created through APIClient, queries the server through APIClient,
and prints one JSON object with what it saw on the last line of stdout. Any SDK exception makes
the script exit non-zero.
"""

import json
import os
import sys

from clearml import Task
from clearml.backend_api.session.client import APIClient


def main() -> int:
    project = os.environ.get("FIDELITY_PROJECT", "fidelity-project")
    second_queue_name = os.environ.get("FIDELITY_SECOND_QUEUE", "fidelity-second")

    task = Task.create(
        project_name=project,
        task_name="fidelity-task",
        docker="python:3.11-slim",
        docker_args="-e FOO=1",
        docker_bash_setup_script="echo hi",
    )
    Task.enqueue(task, queue_name="default")

    client = APIClient()
    created = client.queues.create(name=second_queue_name)
    second_queue_id = created.id

    task2 = Task.create(project_name=project, task_name="fidelity-task-2")
    Task.enqueue(task2, queue_id=second_queue_id)

    queues = client.queues.get_all(name="^default$", only_fields=["id", "name", "entries"])
    default_queue = queues[0]
    tasks = client.tasks.get_all(
        id=[task.id, task2.id],
        only_fields=["id", "status", "execution.queue", "container", "project", "system_tags"],
    )

    report = {
        "task_id": task.id,
        "task2_id": task2.id,
        "project_id": task.project,
        "default_queue_id": default_queue.id,
        "default_queue_entries": [e.task for e in (default_queue.entries or [])],
        "second_queue_id": second_queue_id,
        "tasks": [
            {
                "id": t.id,
                "status": str(t.status),
                "queue": t.execution.queue if t.execution else None,
                "container": t.container,
                "project": t.project,
                "system_tags": t.system_tags,
            }
            for t in tasks
        ],
    }
    print(json.dumps(report, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
