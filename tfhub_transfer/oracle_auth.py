"""A per-search secret for keras-tuner's oracle server, which has no authentication.

In distributed tuning (`--parallel_trials`, or several hosts with keras-tuner's environment
variables) the chief serves its oracle over gRPC on KERASTUNER_ORACLE_IP:PORT, and keras-tuner
1.4 opens it to any client (`grpc.server(...).add_insecure_port`): any process that can reach
the port could read the search or report trial results into it. Here the chief's server
carries an interceptor that refuses (UNAUTHENTICATED) every call without the search's secret,
and each worker's client sends it as gRPC metadata. The secret comes from the environment
(`TOKEN_ENV`): the launcher makes a fresh one per search; across hosts, the user sets the same
value on each. It is not encryption: the calls travel in clear, so a multi-host oracle must run
on a trusted network or through an SSH tunnel (docs/scaling.md).

The hooks: `tuning`'s tuner serves the oracle with `serve_chief` instead of keras-tuner's
`oracle_chief.start_server` (same servicer and stopping rule, plus the interceptor), and gives
its worker-side `OracleClient` an authenticated stub (`authenticate_client`).
"""

import collections
import hmac
import os
import secrets
import time

import grpc

TOKEN_ENV = "TFHUB_TRANSFER_ORACLE_TOKEN"
_METADATA_KEY = "x-tfhub-transfer-oracle-token"  # gRPC metadata keys are lower case.


def new_token() -> str:
  """A fresh secret for one search (128 random bits, hex)."""
  return secrets.token_hex(16)


def check_environment() -> None:
  """In a chief or worker of a distributed search (KERASTUNER_ORACLE_IP set), the secret
  must be set too: checked before the first cell.

  Raises:
    ValueError: it is not set (one line saying how to set it).
  """
  if "KERASTUNER_ORACLE_IP" in os.environ:
    token_from_env()


def token_from_env() -> str:
  """The search's secret, from `TOKEN_ENV`.

  Raises:
    ValueError: it is not set (one line saying how to set it).
  """
  token = os.environ.get(TOKEN_ENV, "")
  if not token:
    raise ValueError(
        f"KERASTUNER_ORACLE_IP is set but {TOKEN_ENV} is not: the search's oracle serves only "
        f"processes that present its secret. Set {TOKEN_ENV} to the same value for the chief "
        f"and every worker, e.g. export {TOKEN_ENV}=$(python -c 'import secrets; "
        f"print(secrets.token_hex(16))') (--parallel_trials sets it itself).")
  return token


class TokenCheck(grpc.ServerInterceptor):
  """Refuses, with UNAUTHENTICATED, every call that does not carry `token`."""

  def __init__(self, token: str):
    self._token = token.encode()

    def refuse(unused_request, context):
      context.abort(grpc.StatusCode.UNAUTHENTICATED,
                    f"tfhub_transfer oracle: this search's secret ({TOKEN_ENV}) is missing or "
                    f"wrong")
    self._refuse = grpc.unary_unary_rpc_method_handler(refuse)

  def intercept_service(self, continuation, handler_call_details):
    presented = dict(handler_call_details.invocation_metadata or ()).get(_METADATA_KEY, "")
    if hmac.compare_digest(presented.encode(), self._token):
      return continuation(handler_call_details)
    return self._refuse  # Every Oracle method is unary-unary.


class _CallDetails(collections.namedtuple(
    "_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready",
                     "compression")), grpc.ClientCallDetails):
  pass


class TokenSender(grpc.UnaryUnaryClientInterceptor):
  """Adds `token` to the metadata of every call."""

  def __init__(self, token: str):
    self._token = token

  def intercept_unary_unary(self, continuation, client_call_details, request):
    details = _CallDetails(
        client_call_details.method, client_call_details.timeout,
        list(client_call_details.metadata or ()) + [(_METADATA_KEY, self._token)],
        client_call_details.credentials, client_call_details.wait_for_ready,
        client_call_details.compression)
    return continuation(details, request)


def start_server(oracle, *, token: str, address: str):
  """Serves `oracle` (keras-tuner's `OracleServicer`) at `address`, behind `TokenCheck`.

  Returns:
    (the started grpc.Server, the servicer).
  """
  from concurrent import futures  # pylint: disable=g-import-not-at-top

  from keras_tuner.src import protos  # pylint: disable=g-import-not-at-top
  from keras_tuner.src.distribute import oracle_chief  # pylint: disable=g-import-not-at-top
  server = grpc.server(futures.ThreadPoolExecutor(max_workers=1),
                       interceptors=(TokenCheck(token),))
  servicer = oracle_chief.OracleServicer(oracle)
  protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
  server.add_insecure_port(address)
  server.start()
  return server, servicer


def serve_chief(oracle) -> None:
  """The chief's part of a search: keras-tuner's `oracle_chief.start_server`, with the
  secret checked. Blocks until the oracle has stopped and every worker has left."""
  from keras_tuner.src.distribute import oracle_chief  # pylint: disable=g-import-not-at-top
  address = f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"
  server, servicer = start_server(oracle, token=token_from_env(), address=address)
  try:
    while not (servicer.stop_triggered and oracle_chief.exit_chief(oracle)):
      time.sleep(1)
  finally:
    server.stop(grace=None)


def authenticate_client(client, token: str) -> None:
  """Gives a keras-tuner `OracleClient` a stub that sends `token` with every call."""
  from keras_tuner.src import protos  # pylint: disable=g-import-not-at-top
  address = f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"
  channel = grpc.intercept_channel(grpc.insecure_channel(address), TokenSender(token))
  client.stub = protos.get_service_grpc().OracleStub(channel)
