import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    torch.set_num_threads(2)


@pytest.fixture
def one_thread():
    """One torch thread for the test, then the count it had. Tiny models on a CPU shared with
    other jobs: two threads per op spin and wait on each other far longer than the work takes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
