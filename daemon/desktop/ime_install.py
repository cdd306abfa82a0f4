"""`qasr-daemon ime install|uninstall|status`: the IBus engine `qasr` registered for this user, no root.

ibus-daemon reads component files only from ``/usr/share/ibus/component`` or from the folders listed in
``IBUS_COMPONENT_PATH`` (which then replaces that default). There is no per-user folder. So ``install``:

1. writes the component file ``$XDG_DATA_HOME/qasr/ibus/qasr.xml``, whose ``<exec>`` is
   ``/usr/bin/python3 <this package>/clients/ime/ibus_engine.py --ibus`` (Debian's python3-gi: IBus's
   bindings are not in qasr's virtual environment);
2. writes ``~/.config/environment.d/60-qasr-ibus.conf`` setting ``IBUS_COMPONENT_PATH`` to that folder
   plus ``/usr/share/ibus/component``: systemd's user manager and the GNOME/KDE sessions it starts read
   it at the next login (then ibus-daemon sees our engine beside the system's);
3. as root (``--system``) copies the file to ``/usr/share/ibus/component/qasr.xml`` instead, which every
   ibus-daemon reads at once (after ``ibus restart``);
4. prints the commands left to the user: ``ibus restart``, and on GNOME the ``gsettings`` line that adds
   the input source (GNOME keeps its input sources there, not in IBus).
``uninstall`` removes what ``install`` wrote and prints the ``gsettings`` line that removes the source.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

from qasr import __version__
from qasr.config import paths
from qasr.errors import QasrError

SYSTEM_DIR = Path("/usr/share/ibus/component")
SYSTEM_PYTHON = "/usr/bin/python3"
GNOME_SOURCES = "org.gnome.desktop.input-sources"
ENGINE = "qasr"
ENV_FILE_NAME = "60-qasr-ibus.conf"
MISSING_BINDINGS = "IBus's Python bindings are missing: sudo apt install ibus python3-gi gir1.2-ibus-1.0"


def engine_script() -> Path:
    from qasr.clients import ime

    return Path(ime.__file__).resolve().parent / "ibus_engine.py"


def user_component_dir() -> Path:
    return paths.data_dir() / "ibus"


def env_file() -> Path:
    value = os.environ.get("XDG_CONFIG_HOME", "")
    base = Path(value) if value and os.path.isabs(value) else Path.home() / ".config"
    return base / "environment.d" / ENV_FILE_NAME


def component_xml(python: str = SYSTEM_PYTHON, script: Path | None = None) -> str:
    command = f"{python} {script or engine_script()} --ibus"
    return f"""<?xml version="1.0" encoding="utf-8"?>
<component>
  <name>org.freedesktop.IBus.Qasr</name>
  <description>qasr dictation: speech at the cursor, through the running qasr daemon</description>
  <exec>{escape(command)}</exec>
  <version>{escape(__version__)}</version>
  <author>qasr</author>
  <license>Apache-2.0</license>
  <homepage>https://github.com/</homepage>
  <textdomain>qasr</textdomain>
  <engines>
    <engine>
      <name>{ENGINE}</name>
      <language>other</language>
      <license>Apache-2.0</license>
      <author>qasr</author>
      <layout>default</layout>
      <longname>Dictation (qasr)</longname>
      <description>Hold the dictation key and speak; the words appear at the cursor</description>
      <rank>0</rank>
    </engine>
  </engines>
</component>
"""


def bindings_problem(python: str = SYSTEM_PYTHON) -> str:
    """"" when ``python`` can load IBus through gi; else what to install."""
    if not Path(python).exists():
        return f"{python} does not exist; {MISSING_BINDINGS}"
    probe = subprocess.run([python, "-c", "import gi; gi.require_version('IBus', '1.0'); from gi.repository import IBus"],
                           capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    return "" if probe.returncode == 0 else MISSING_BINDINGS


def gnome_sources(add: bool) -> str:
    """The gsettings command that adds (removes) ('ibus', 'qasr') to GNOME's input sources."""
    current = "[('xkb', 'us')]"
    if shutil.which("gsettings"):
        got = subprocess.run(["gsettings", "get", GNOME_SOURCES, "sources"], capture_output=True, text=True,
                             timeout=10, stdin=subprocess.DEVNULL)
        if got.returncode == 0 and got.stdout.strip().startswith("["):
            current = got.stdout.strip().removeprefix("@a(ss) ")
    try:
        sources = [tuple(s) for s in ast.literal_eval(current)]
    except (ValueError, SyntaxError):
        sources = [("xkb", "us")]
    ours = ("ibus", ENGINE)
    sources = [s for s in sources if s != ours] + ([ours] if add else [])
    return f'gsettings set {GNOME_SOURCES} sources "{sources!r}"'


@dataclass
class Report:
    done: list[str] = field(default_factory=list)
    todo: list[str] = field(default_factory=list)

    def text(self) -> str:
        lines = [f"  {line}" for line in self.done]
        if self.todo:
            lines += ["then:", *(f"  {line}" for line in self.todo)]
        return "\n".join(lines)


def install(system: bool = False) -> Report:
    problem = bindings_problem()
    if problem:
        raise QasrError(problem)
    report = Report()
    xml = component_xml()
    if system:
        if os.geteuid() != 0:
            raise QasrError("--system writes /usr/share/ibus/component: run it with sudo, or leave --system out")
        SYSTEM_DIR.mkdir(parents=True, exist_ok=True)
        (SYSTEM_DIR / "qasr.xml").write_text(xml, encoding="utf-8")
        report.done.append(f"wrote {SYSTEM_DIR / 'qasr.xml'} (every user's ibus-daemon reads it)")
    else:
        folder = user_component_dir()
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "qasr.xml").write_text(xml, encoding="utf-8")
        env = env_file()
        env.parent.mkdir(parents=True, exist_ok=True)
        env.write_text(f"# written by `qasr-daemon ime install`: ibus-daemon reads our engine from here\n"
                       f"IBUS_COMPONENT_PATH={folder}:{SYSTEM_DIR}\n", encoding="utf-8")
        report.done += [f"wrote {folder / 'qasr.xml'} (runs {SYSTEM_PYTHON} {engine_script()} --ibus)",
                        f"wrote {env} (IBUS_COMPONENT_PATH; read at your next login)"]
        report.todo.append(f"log out and in (or: IBUS_COMPONENT_PATH={folder}:{SYSTEM_DIR} ibus-daemon -drx)")
        report.todo.append(f"without a login manager that reads environment.d: sudo install -m644 "
                           f"{folder / 'qasr.xml'} {SYSTEM_DIR}/qasr.xml && ibus restart")
    report.todo.append(f"GNOME: {gnome_sources(add=True)}")
    report.todo.append("KDE, sway, Hyprland, X11 with IBus: ibus engine qasr  (or ibus-setup → Input Method → "
                       "Add → Other → Dictation (qasr))")
    return report


def uninstall() -> Report:
    report = Report()
    for path in (user_component_dir() / "qasr.xml", env_file()):
        if path.exists():
            path.unlink()
            report.done.append(f"removed {path}")
    system = SYSTEM_DIR / "qasr.xml"
    if system.exists():
        if os.access(system.parent, os.W_OK):
            system.unlink()
            report.done.append(f"removed {system}")
        else:
            report.todo.append(f"sudo rm {system} && ibus restart")
    if not report.done:
        report.done.append("nothing to remove: the engine was not installed for this user")
    report.todo.append(f"GNOME: {gnome_sources(add=False)}")
    return report


def installed() -> dict:
    """Where the component is (doctor, ``ime status``)."""
    user, system = user_component_dir() / "qasr.xml", SYSTEM_DIR / "qasr.xml"
    component_path = os.environ.get("IBUS_COMPONENT_PATH", "")
    return {"user_file": str(user) if user.exists() else None, "system_file": str(system) if system.exists() else None,
            "env_file": str(env_file()) if env_file().exists() else None,
            "component_path_active": str(user.parent) in component_path.split(":")}
