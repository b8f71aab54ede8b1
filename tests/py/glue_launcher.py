"""Runs the official Python k8s glue (clearml-agent's K8sIntegration, from PyPI, unmodified) for the
benchmark (tests/e2e/src/bench/), the way the clearml-agent Helm chart's k8s_glue_example.py does:
K8sIntegration(...) then k8s_daemon(queues).

ClearML is configured by the environment only (CLEARML_API_HOST, CLEARML_API_ACCESS_KEY,
CLEARML_API_SECRET_KEY, CLEARML_WEB_HOST, CLEARML_FILES_HOST, CLEARML_WORKER_ID, CLEARML_CONFIG_FILE,
with a fresh HOME); kubectl comes from PATH and talks to the cluster named by KUBECONFIG.

Usage: glue_launcher.py --template POD_TEMPLATE.yaml --namespace NS QUEUE [QUEUE ...]
"""

import argparse
import sys


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--template", required=True, help="pod template YAML (--template-yaml)")
    parser.add_argument("--namespace", required=True, help="namespace of the task pods")
    parser.add_argument("queues", nargs="+", help="queue names, highest priority first")
    args = parser.parse_args()

    # Imported here so that a broken install fails with a clear traceback, not at parse time.
    from clearml_agent.glue.k8s import K8sIntegration

    glue = K8sIntegration(
        template_yaml=args.template,
        namespace=args.namespace,
    )
    # Runs until the process is killed; prints its progress to stdout.
    glue.k8s_daemon(args.queues)


if __name__ == "__main__":
    sys.exit(main())
