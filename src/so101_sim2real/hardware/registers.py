"""The STS3215 control table (docs/reference.md section 5): names, addresses, sizes, signs."""

from __future__ import annotations

from dataclasses import dataclass

from so101_sim2real.hardware.protocol import decode_sign_magnitude, encode_sign_magnitude

MODEL_STS3215 = 777
BAUD_RATES = {0: 1_000_000, 1: 500_000, 2: 250_000, 3: 128_000, 4: 115_200, 5: 57_600, 6: 38_400, 7: 19_200}


@dataclass(frozen=True)
class Register:
    name: str
    address: int
    size: int
    eeprom: bool = False
    sign_bit: int | None = None  # sign-magnitude fields
    writable: bool = True

    def encode(self, value: int) -> bytes:
        raw = encode_sign_magnitude(value, self.sign_bit) if self.sign_bit is not None else int(value)
        if not 0 <= raw < 1 << (8 * self.size):
            raise ValueError(f"{self.name}: {value} does not fit {self.size} byte(s)")
        return raw.to_bytes(self.size, "little")

    def decode(self, data: bytes) -> int:
        raw = int.from_bytes(data, "little")
        return decode_sign_magnitude(raw, self.sign_bit) if self.sign_bit is not None else raw


_TABLE = [
    # EEPROM
    Register("firmware_major", 0, 1, True, writable=False),
    Register("firmware_minor", 1, 1, True, writable=False),
    Register("model_number", 3, 2, True, writable=False),
    Register("id", 5, 1, True),
    Register("baud_rate", 6, 1, True),
    Register("return_delay", 7, 1, True),
    Register("min_position_limit", 9, 2, True),
    Register("max_position_limit", 11, 2, True),
    Register("max_torque", 16, 2, True),
    Register("phase", 18, 1, True),
    Register("p_coefficient", 21, 1, True),
    Register("d_coefficient", 22, 1, True),
    Register("i_coefficient", 23, 1, True),
    Register("protection_current", 28, 2, True),
    Register("homing_offset", 31, 2, True, sign_bit=11),
    Register("operating_mode", 33, 1, True),
    Register("overload_torque", 36, 1, True),
    # SRAM
    Register("torque_enable", 40, 1),
    Register("acceleration", 41, 1),
    Register("goal_position", 42, 2, sign_bit=15),
    Register("goal_velocity", 46, 2, sign_bit=15),
    Register("lock", 55, 1),
    Register("present_position", 56, 2, sign_bit=15, writable=False),
    Register("present_velocity", 58, 2, sign_bit=15, writable=False),
    Register("present_load", 60, 2, sign_bit=10, writable=False),
    Register("present_voltage", 62, 1, writable=False),
    Register("present_temperature", 63, 1, writable=False),
    Register("present_current", 69, 2, writable=False),
    Register("max_acceleration", 85, 1),
]

REGISTERS: dict[str, Register] = {r.name: r for r in _TABLE}
EEPROM_END = 40  # addresses below are EEPROM: writes need torque off and lock 0


def register(name: str) -> Register:
    try:
        return REGISTERS[name]
    except KeyError:
        raise KeyError(f"unknown STS3215 register '{name}'") from None
