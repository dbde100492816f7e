"""The tuner's oracle server refuses clients without the search's secret."""

import os
from unittest import mock

import grpc
import keras_tuner as kt
from keras_tuner.src import protos
from keras_tuner.src.distribute import oracle_client
import tensorflow as tf

from tfhub_transfer import launcher
from tfhub_transfer import oracle_auth


class OracleAuthTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    oracle = kt.oracles.GridSearchOracle(objective=kt.Objective("val_metric", "max"))
    hp = kt.HyperParameters()
    hp.Choice("learning_rate", [0.1, 0.01])
    oracle.update_space(hp)
    self.port = launcher.free_port()
    self.token = oracle_auth.new_token()
    self.server, _ = oracle_auth.start_server(oracle, token=self.token,
                                              address=f"127.0.0.1:{self.port}")
    self.addCleanup(self.server.stop, None)

  def _get_space(self, metadata):
    with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
      stub = protos.get_service_grpc().OracleStub(channel)
      return stub.GetSpace(protos.get_service().GetSpaceRequest(), metadata=metadata,
                           wait_for_ready=True, timeout=30)

  def test_a_client_without_the_secret_is_refused(self):
    for metadata in ((), (("x-tfhub-transfer-oracle-token", "0" * 32),)):
      with self.assertRaises(grpc.RpcError) as refused:
        self._get_space(metadata)
      self.assertEqual(refused.exception.code(), grpc.StatusCode.UNAUTHENTICATED, metadata)
      self.assertIn("secret (TFHUB_TRANSFER_ORACLE_TOKEN) is missing or wrong",
                    refused.exception.details())

  def test_a_worker_with_the_secret_is_served(self):
    response = self._get_space((("x-tfhub-transfer-oracle-token", self.token),))
    served = kt.HyperParameters.from_proto(response.hyperparameters)
    self.assertEqual(served.get("learning_rate"), 0.1)
    env = {"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(self.port),
           "KERASTUNER_TUNER_ID": "worker0"}
    with mock.patch.dict(os.environ, env):
      client = oracle_client.OracleClient(kt.oracles.GridSearchOracle())
      with self.assertRaises(grpc.RpcError):  # keras-tuner's own client: refused.
        client.get_space()
      oracle_auth.authenticate_client(client, self.token)
      self.assertEqual(client.get_space().get("learning_rate"), 0.1)

  def test_the_secret_must_be_set_for_a_distributed_search(self):
    with mock.patch.dict(os.environ, {oracle_auth.TOKEN_ENV: ""}):
      with self.assertRaisesRegex(ValueError, "KERASTUNER_ORACLE_IP is set but "
                                              "TFHUB_TRANSFER_ORACLE_TOKEN is not"):
        oracle_auth.token_from_env()


if __name__ == "__main__":
  tf.test.main()
