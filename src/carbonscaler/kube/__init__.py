"""What the operator and the Kubernetes backend share, below both: the custom resources
(``crd``), the Kubeflow job bodies, patches and Events built from them (``resources``) and the
API operations as values (``operations``). Pure: no kopf, no kubernetes client.

Nothing is imported here, so ``python -m carbonscaler.kube.crd deploy/crds`` runs cleanly;
import from the modules.
"""
