"""backbones.benchmark.results: the machine, command and date every results file names."""
import datetime
import json

from backbones.benchmark.results import machine_description, provenance, write_results


def test_machine_description_names_the_cpu_generation(tmp_path):
    """One marketing name ('AMD EPYC') covers several generations; the tables name family,
    model and vector extension (the first processor's block of /proc/cpuinfo)."""
    x86 = tmp_path / 'x86'
    x86.write_text('processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel\t\t: 2\n'
                   'model name\t: AMD EPYC\nflags\t\t: fpu sse avx2 avx512f avx512bw\n\n'
                   'processor\t: 1\ncpu family\t: 99\nmodel name\t: other\n')
    assert machine_description(str(x86)).startswith('AMD EPYC (family 26, model 2, AVX-512), ')
    arm = tmp_path / 'arm'
    arm.write_text('processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes\n')
    assert ' (NEON), ' in machine_description(str(arm))
    assert '(' not in machine_description(str(tmp_path / 'missing'))  # no cpuinfo: the platform's name


def test_results_files_start_with_command_date_and_machine(tmp_path):
    header = provenance('test machine', ['tools/benchmark.py', '--end-to-end', '--seconds', '2'])
    today = datetime.date.today().isoformat()
    assert header == f'`tools/benchmark.py --end-to-end --seconds 2`, {today}, on test machine.'
    written = write_results(str(tmp_path / 'run'), header, '| a |', dict(rows=[1]))
    assert written == [str(tmp_path / 'run.md'), str(tmp_path / 'run.json')]
    assert (tmp_path / 'run.md').read_text() == f'{header}\n\n| a |\n'
    assert json.loads((tmp_path / 'run.json').read_text()) == dict(provenance=header, rows=[1])
